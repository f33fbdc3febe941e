"""Per-LMCache-release compatibility: what each release needs beyond the generic redirect.

A *profile* is chosen from the installed LMCache version (package metadata; LMCache is never
imported for this) and may add rows over the redirect table (``overlay``), stand-in modules
(``module_overrides``) and fix-ups run right after an in-scope module executed (``post_exec``).
``PROFILES`` is the declarative table; the first row whose version range matches wins.

* CUDA-only releases (< 0.4.3): ``torch.cuda.is_available()`` reports the HPU, so LMCache takes
  its device paths; ``lmcache.c_ops`` becomes the torch-native stand-in; the vLLM paged connector
  becomes the shim's batched HPU connector; device selection that asks vLLM's platform for cuda or
  xpu (0.3.10 - 0.4.2: adapter, manager, integration utils) answers "cuda", which the scope maps to
  the HPU.
* Native-HPU releases (>= 0.4.3): ``torch.cuda.is_available()`` is False *inside LMCache only*
  (what vllm-gaudi does process-wide) so LMCache's own HPU connector runs; the shim fixes what
  still breaks on Gaudi: ``torch.hpu.get_device_properties(0).name`` (a str on HPU), the
  0.4.3 - 0.4.6 routing of ``use_layerwise`` into the CUDA connector, and the flat
  ``[NB*BS, H, D]`` KV layout of vllm-gaudi < 0.11.2, which its HPU connector misreads. With
  ``HPU_SHIM_BACKEND=cpu`` (vLLM's CPU build) the missing cpu connector is supplied.

The fix-up contract (stable; other modules add rows to the profile tables against it):

* a fix-up is ``fixup(module, ctx)``, run right after the in-scope ``module`` executed;
* ``ctx.patches.patch(owner, name, value)`` records a change that ``uninstall()`` undoes;
* ``ctx.backend`` is the resolved backend (``.name``, ``.mark_step()``, ``.target``);
* ``ctx.config`` is the ``hpu_shim.runtime.config.Config`` (e.g. ``native_connector``,
  ``remote_timeout``); ``ctx.cuda_proxy`` is what ``torch.cuda`` is inside the scope;
* ``ctx.compat.name`` is the profile/release name (e.g. ``"0.3.7 (CUDA-only: shim connector)"``);
* a stand-in builder is ``build(module)``: it fills a fresh module object.

Profiles return what they add (``overlay``, ``module_overrides``, ``post_exec``); the runtime
applies it (``hpu_shim.runtime.activation``). The tested LMCache range is ``TESTED`` (0.3.1 -
0.5.6): outside it a WARNING is logged once and only fix-ups declared with a precondition
(``Fixup(func, precondition)``) whose precondition holds on the module are applied. A fix-up that
raises is logged and its patches are rolled back; LMCache's import always goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from ..redirects import MISMATCH, Redirect
from . import keys as _keys  # HETERO
from . import remote as _remote  # HETERO
from . import retrieve as _retrieve  # HETERO
from .releases import lmcache_version, parse_version

__all__ = ["Profile", "Fixup", "PROFILES", "TESTED", "select", "applies", "call", "lmcache_version",
           "parse_version"]

log = logging.getLogger("hpu_shim")

#: The LMCache releases the profiles were tested with (inclusive).
TESTED = ((0, 3, 1), (0, 5, 6))


@dataclasses.dataclass(frozen=True)
class Fixup:
    """A fix-up with a declared precondition on the module: what still applies to an untested release."""

    func: Callable[[Any, Any], None]
    precondition: Callable[[Any], bool]

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return getattr(self.func, "__name__", repr(self.func))

    def __call__(self, module: Any, ctx: Any) -> None:
        self.func(module, ctx)


@dataclasses.dataclass
class Profile:
    name: str
    overlay: dict = dataclasses.field(default_factory=dict)
    #: module name -> fills a fresh module object with a stand-in (e.g. torch-native lmcache.c_ops)
    module_overrides: dict[str, Callable[[Any], None]] = dataclasses.field(default_factory=dict)
    #: module name -> fix-up ``fixup(module, ctx)`` (a function, or a ``Fixup`` with a precondition)
    post_exec: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: False outside ``TESTED``: only fix-ups whose precondition holds are applied
    tested: bool = True


def _defines(*names: str) -> Callable[[Any], bool]:
    """Precondition: the module itself defines one of these classes (not an import of them)."""
    def holds(module: Any) -> bool:
        return any(isinstance(v, type) and v.__module__ == module.__name__
                   for v in (getattr(module, n, None) for n in names))
    return holds


def _has(path: str) -> Callable[[Any], bool]:
    """Precondition: ``module.<path>`` exists (dotted)."""
    def holds(module: Any) -> bool:
        obj = module
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return True
    return holds


# ---- fix-ups ---------------------------------------------------------------------------------------
_UNSUPPORTED_CONNECTORS = {
    "VLLMPagedMemGPUConnectorV3": ("the V3 connector is built on CUDA kernels", "Leave use_gpu_connector_v3 off."),
    "VLLMBufferLayerwiseGPUConnector": ("layerwise blending needs CUDA kernels and streams",
                                        "Set use_layerwise: false and enable_blending: false."),
    "VLLMPagedMemLayerwiseGPUConnector": (
        "layerwise transfer is not supported on HPU by hpu_shim (its kernel signature changes from release to "
        "release, and LMCache >= 0.4.7 refuses layerwise on HPU natively too)", "Set use_layerwise: false."),
    "SGLangGPUConnector": ("the SGLang connector is CUDA-only", "Use vLLM (vllm-gaudi) on HPU."),
    "SGLangLayerwiseGPUConnector": ("the SGLang connector is CUDA-only", "Use vLLM (vllm-gaudi) on HPU."),
}


def _fix_connectors(module: Any, rt: Any) -> None:
    """Swap the release's CUDA connectors (defined in this module) for the shim's, in scope only."""
    from lmcache.v1.memory_management import MemoryFormat  # imported by the connector module already

    from .connector import make_paged_connector, make_unsupported_connector

    release = rt.compat.name if rt.compat else "?"
    own = {k: v for k, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__}
    if "VLLMPagedMemGPUConnectorV2" in own:
        rt.patches.patch(module, "VLLMPagedMemGPUConnectorV2",
                         make_paged_connector(own["VLLMPagedMemGPUConnectorV2"], rt, MemoryFormat))
    for name, (why, fix) in _UNSUPPORTED_CONNECTORS.items():
        if name in own:
            rt.patches.patch(module, name, make_unsupported_connector(own[name], release, why, fix))


def _fix_torch_dev(module: Any, rt: Any) -> None:
    """0.3.10 - 0.4.2 ask vLLM's platform for cuda/xpu and raise otherwise; on Gaudi answer "cuda"."""
    if hasattr(module, "get_vllm_torch_dev"):
        _answer_cuda(module, rt)


def _fix_torch_dev_on_cpu(module: Any, rt: Any) -> None:
    """0.4.3 - 0.4.7 know cuda, xpu and hpu; on vLLM's CPU build (cpu backend) answer "cuda" too."""
    if hasattr(module, "get_vllm_torch_dev") and rt.backend is not None and rt.backend.name == "cpu":
        _answer_cuda(module, rt)


def _answer_cuda(module: Any, rt: Any) -> None:
    def get_vllm_torch_dev():
        return rt.cuda_proxy, "cuda"  # "cuda" is the backend device inside the scope

    get_vllm_torch_dev.__doc__ = "hpu_shim: inside LMCache, CUDA is the shim's backend device."
    rt.patches.patch(module, "get_vllm_torch_dev", get_vllm_torch_dev)


def _is_vllm(engine: Any) -> bool:
    return str(getattr(engine, "name", engine)).lower() == "vllm"


class _PlatformAsCuda:
    """vLLM's ``current_platform`` as LMCache 0.3.10 - 0.4.2 should see it inside the scope: "cuda".

    Those releases ask ``is_cuda_alike()``/``is_xpu()`` and raise "Unsupported device platform"
    otherwise -- on vllm-gaudi (HpuPlatform) as on vLLM-CPU. Inside LMCache, CUDA *is* the backend
    device, so the answer is cuda; every other attribute is vLLM's own.
    """

    def __init__(self, platform: Any):
        self._platform = platform

    def is_cuda_alike(self) -> bool:
        return True

    def is_cuda(self) -> bool:
        return True

    def is_xpu(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._platform, name)


def _fix_adapter_platform(module: Any, rt: Any) -> None:
    """0.3.10 - 0.3.12: ``_init_lmcache_engine`` reads the module global ``current_platform``."""
    platform = getattr(module, "current_platform", None)
    if platform is not None and not isinstance(platform, _PlatformAsCuda):
        rt.patches.patch(module, "current_platform", _PlatformAsCuda(platform))


def _fix_manager_platform(module: Any, rt: Any) -> None:
    """0.3.13 - 0.4.2: ``LMCacheManager._get_device_info(current_platform)`` gets it as an argument."""
    manager = getattr(module, "LMCacheManager", None)
    original = getattr(manager, "_get_device_info", None) if manager is not None else None
    if original is None:
        return

    def _get_device_info(self: Any, current_platform: Any) -> Any:
        return original(self, _PlatformAsCuda(current_platform))

    _get_device_info.__wrapped__ = original  # type: ignore[attr-defined]
    rt.patches.patch(manager, "_get_device_info", _get_device_info)


def _fix_create_connector(module: Any, rt: Any) -> None:
    """Wrap the release's ``CreateGPUConnector`` for what it gets wrong on HPU and vLLM-CPU.

    * 0.4.3 - 0.4.6 check ``use_layerwise`` before the device, so HPU lands in the CUDA layerwise
      connector: refuse it clearly, as >= 0.4.7 does natively.
    * On vLLM's CPU build (``HPU_SHIM_BACKEND=cpu``) the release has no cpu branch ("No supported
      cpu connector found"): answer with the shim's vLLM-CPU connector.
    """
    original = getattr(module, "CreateGPUConnector", None)
    if original is None:
        return
    layerwise_misrouted = (parse_version(lmcache_version()) or (0, 0, 0)) < (0, 4, 7)

    def CreateGPUConnector(config: Any, metadata: Any, engine: Any, *args: Any, **kwargs: Any) -> Any:
        backend = rt.backend.name if rt.backend is not None else None
        if backend == "hpu" and layerwise_misrouted and getattr(config, "use_layerwise", False):
            raise ValueError(
                f"use_layerwise=True is not supported on HPU: LMCache {rt.compat.name} would route it to its CUDA "
                f"layerwise connector (torch.cuda streams and kernels), and its HPU connector has no layerwise "
                f"mode (LMCache >= 0.4.7 refuses it too). Set use_layerwise: false."
            )
        # 0.5.x name the detected device in ``torch_device_type``; 0.4.x have no cpu detection at all.
        if (backend == "cpu" and getattr(module, "torch_device_type", "cpu") == "cpu" and _is_vllm(engine)
                and not getattr(config, "use_layerwise", False)):
            from lmcache.v1.gpu_connector.gpu_connectors import GPUConnectorInterface
            from lmcache.v1.memory_management import MemoryFormat

            from .cpu_connector import make_cpu_connector

            return make_cpu_connector(GPUConnectorInterface, MemoryFormat).from_metadata(metadata)
        return original(config, metadata, engine, *args, **kwargs)

    CreateGPUConnector.__wrapped__ = original  # type: ignore[attr-defined]
    rt.patches.patch(module, "CreateGPUConnector", CreateGPUConnector)


# -- CONNECTORS: LMCache's own HPU connector (>= 0.4.3) -------------------------------------------------------
def _fix_native_hpu_connector(module: Any, rt: Any) -> None:
    """LMCache's HPU connector becomes the shim's batched subclass (``native_connector``), or, with
    ``HPU_SHIM_NATIVE_CONNECTOR=1``, stays LMCache's own with the layout fixes only (vllm-gaudi < 0.11.2's
    flat ``[NB*BS, H, D]`` viewed as ``[NB*BS, 1, H, D]``; per-layer tuples kept as given)."""
    from lmcache.v1.memory_management import MemoryFormat  # the connector module imported it already

    from .connector import make_flat_aware_connector
    from .native_connector import make_batched_hpu_connector

    base = getattr(module, "VLLMPagedMemHPUConnectorV2", None)
    if isinstance(base, type) and base.__module__ == module.__name__:
        keep_own = bool(getattr(rt.config, "native_connector", False))
        rt.patches.patch(module, "VLLMPagedMemHPUConnectorV2", make_flat_aware_connector(base) if keep_own
                         else make_batched_hpu_connector(base, rt, MemoryFormat))


def _native_name(version: str | None) -> str:
    """Which connector a native-HPU release runs, in the profile name (``status()``, ``doctor``)."""
    from ..runtime.config import load
    from .native_connector import NATIVE_CONNECTOR_NAMES

    try:
        config = load()
    except Exception:  # a bad value is reported by the runtime's own config load
        return f"{version} (native HPU release)"
    what = "shim cpu connector" if config.backend == "cpu" else NATIVE_CONNECTOR_NAMES[config.native_connector]
    return f"{version} (native HPU release: {what})"
# -- end CONNECTORS ---------------------------------------------------------------------------------------------


def _c_ops_stand_in(module: Any) -> None:
    from . import c_ops

    c_ops.build(module)


_STAND_INS = {"lmcache.c_ops": _c_ops_stand_in, "lmcache.cuda_ops": _c_ops_stand_in}


_SKIP_HOST_REGISTER = Redirect(MISMATCH, "cudart_without_pinning",
                               "0.3.1 - 0.3.3 pin host buffers with cudaHostRegister; on HPU it is skipped "
                               "(buffers stay unpinned)")


_CONNECTORS = Fixup(_fix_connectors, _defines("VLLMPagedMemGPUConnectorV2", *_UNSUPPORTED_CONNECTORS))


def _storage_fixups() -> dict:
    """HETERO: cross-process storage fix-ups for every release (``docs/hetero.md``)."""
    return {
        "lmcache.v1.storage_backend.remote_backend": Fixup(_remote.fix_remote_backend, _defines("RemoteBackend")),
        "lmcache.v1.storage_backend.connector.lm_connector": Fixup(_remote.fix_lm_connector,
                                                                   _defines("LMCServerConnector")),
        "lmcache.v1.storage_backend.job_executor.pq_executor": Fixup(_remote.fix_pq_executor,
                                                                     _defines("AsyncPQExecutor")),
        "lmcache.v1.storage_backend.connector.fs_adapter": Fixup(_remote.fix_fs_url, _has("parse_remote_url")),
        "lmcache.v1.storage_backend.storage_manager": Fixup(_retrieve.fix_storage_manager,
                                                            _defines("StorageManager")),
        "lmcache.v1.cache_engine": Fixup(_retrieve.fix_cache_engine, _defines("LMCacheEngine")),
    }


def _cuda_only(version: str | None) -> Profile:
    v = parse_version(version) or (0, 0, 0)
    return Profile(
        name=f"{version} (CUDA-only: shim connector)",
        overlay={"cudart": _SKIP_HOST_REGISTER} if v < (0, 3, 4) else {},
        module_overrides=dict(_STAND_INS),
        post_exec={
            "lmcache.v1.gpu_connector": _CONNECTORS,
            "lmcache.v1.gpu_connector.gpu_connectors": _CONNECTORS,
            "lmcache.integration.vllm.utils": Fixup(_fix_torch_dev, _has("get_vllm_torch_dev")),
            "lmcache.integration.vllm.vllm_v1_adapter": Fixup(_fix_adapter_platform, _has("current_platform")),
            "lmcache.v1.manager": Fixup(_fix_manager_platform, _has("LMCacheManager._get_device_info")),
            # HETERO: deterministic chunk keys (hash(None) is per-process on Python < 3.12)
            "lmcache.v1.token_database": Fixup(_keys.fix_token_database, _has("TokenDatabase")),
            **_storage_fixups(),  # HETERO
        },
    )


_NATIVE_OFF = Redirect(MISMATCH, "cuda_unavailable",
                       "LMCache has native HPU support: its CUDA-only paths stay off inside LMCache (vllm-gaudi does "
                       "this process-wide)")


def _native_hpu(version: str | None) -> Profile:
    post_exec = {"lmcache.v1.gpu_connector.hpu_connector": Fixup(_fix_native_hpu_connector,
                                                                 _defines("VLLMPagedMemHPUConnectorV2")),
                 "lmcache.v1.gpu_connector": Fixup(_fix_create_connector, _has("CreateGPUConnector")),
                 "lmcache.integration.vllm.utils": Fixup(_fix_torch_dev_on_cpu, _has("get_vllm_torch_dev")),
                 **_storage_fixups()}  # HETERO
    return Profile(name=_native_name(version), overlay={"is_available": _NATIVE_OFF},  # CONNECTORS: name
                   module_overrides=dict(_STAND_INS), post_exec=post_exec)


def _generic(version: str | None) -> Profile:
    return Profile(name=f"{version} (generic)" if version else "generic")


#: (version predicate, profile factory): first match wins.
PROFILES: list[tuple[Callable[[tuple | None], bool], Callable[[str | None], Profile]]] = [
    (lambda v: v is not None and v < (0, 4, 3), _cuda_only),
    (lambda v: v is not None, _native_hpu),
    (lambda v: True, _generic),
]


def select(packages: tuple) -> Profile | None:
    """The profile for the installed LMCache (None when ``lmcache`` is not in scope).

    Outside ``TESTED`` a WARNING is logged once and the profile is marked untested.
    """
    if "lmcache" not in packages:
        return None
    version = lmcache_version()
    parsed = parse_version(version)
    for matches, factory in PROFILES:
        if matches(parsed):
            profile = factory(version)
            if parsed is not None and not TESTED[0] <= parsed <= TESTED[1]:
                profile.tested = False
                _warn_untested(version)
            return profile
    return None


_warned: set = set()


def _warn_untested(version: str | None) -> None:
    if version not in _warned:
        _warned.add(version)
        low, high = (".".join(map(str, v)) for v in TESTED)
        log.warning("hpu_shim: LMCache %s is outside the tested range %s - %s; applying only the fix-ups whose "
                    "preconditions hold on it. Check `python -m hpu_shim doctor` and report what fails.",
                    version, low, high)


def applies(fixup: Any, module: Any, ctx: Any) -> bool:
    """Whether to run ``fixup`` on ``module``: its precondition holds, and, on an untested release, it has one."""
    precondition = getattr(fixup, "precondition", None)
    if precondition is not None:
        if not precondition(module):
            log.debug("hpu_shim: fix-up %s skipped: its precondition does not hold on %s",
                      getattr(fixup, "__name__", fixup), module.__name__)
            return False
        return True
    if ctx.compat is not None and not ctx.compat.tested:
        log.info("hpu_shim: fix-up %s for %s skipped: LMCache %s is untested and the fix-up declares no "
                 "precondition", getattr(fixup, "__name__", fixup), module.__name__, ctx.compat.name)
        return False
    return True


def call(fixup: Any, module: Any, ctx: Any) -> None:
    fixup(module, ctx)
