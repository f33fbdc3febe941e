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
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from ..redirects import MISMATCH, Redirect

__all__ = ["Profile", "PROFILES", "activate", "lmcache_version", "parse_version"]


@dataclasses.dataclass
class Profile:
    name: str
    overlay: dict = dataclasses.field(default_factory=dict)
    #: module name -> fills a fresh module object with a stand-in (e.g. torch-native lmcache.c_ops)
    module_overrides: dict[str, Callable[[Any], None]] = dataclasses.field(default_factory=dict)
    #: module name -> fix-up run right after that in-scope module executed (patches go through rt.patches)
    post_exec: dict[str, Callable[[Any, Any], None]] = dataclasses.field(default_factory=dict)

    def deactivate(self, rt: Any) -> None:
        from . import c_ops

        c_ops._buffers.clear()


def lmcache_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmcache")
    except PackageNotFoundError:
        return None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else None


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


def _fix_native_hpu_connector(module: Any, rt: Any) -> None:
    """LMCache's HPU connector reads ``(K, V)`` as ``[NB, BS, H, D]``; vllm-gaudi < 0.11.2 hands over flat
    ``[NB*BS, H, D]`` (plus scales). View them as ``[NB*BS, 1, H, D]``: same memory, same slots."""
    from .connector import make_flat_aware_connector

    base = getattr(module, "VLLMPagedMemHPUConnectorV2", None)
    if isinstance(base, type) and base.__module__ == module.__name__:
        rt.patches.patch(module, "VLLMPagedMemHPUConnectorV2", make_flat_aware_connector(base))


def _c_ops_stand_in(module: Any) -> None:
    from . import c_ops

    c_ops.build(module)


_STAND_INS = {"lmcache.c_ops": _c_ops_stand_in, "lmcache.cuda_ops": _c_ops_stand_in}


_SKIP_HOST_REGISTER = Redirect(MISMATCH, "cudart_without_pinning",
                               "0.3.1 - 0.3.3 pin host buffers with cudaHostRegister; on HPU it is skipped "
                               "(buffers stay unpinned)")


def _cuda_only(version: str | None) -> Profile:
    v = parse_version(version) or (0, 0, 0)
    return Profile(
        name=f"{version} (CUDA-only: shim connector)",
        overlay={"cudart": _SKIP_HOST_REGISTER} if v < (0, 3, 4) else {},
        module_overrides=dict(_STAND_INS),
        post_exec={
            "lmcache.v1.gpu_connector": _fix_connectors,
            "lmcache.v1.gpu_connector.gpu_connectors": _fix_connectors,
            "lmcache.integration.vllm.utils": _fix_torch_dev,
            "lmcache.integration.vllm.vllm_v1_adapter": _fix_adapter_platform,
            "lmcache.v1.manager": _fix_manager_platform,
        },
    )


_NATIVE_OFF = Redirect(MISMATCH, "cuda_unavailable",
                       "LMCache has native HPU support: its CUDA-only paths stay off inside LMCache (vllm-gaudi does "
                       "this process-wide)")


def _native_hpu(version: str | None) -> Profile:
    post_exec = {"lmcache.v1.gpu_connector.hpu_connector": _fix_native_hpu_connector,
                 "lmcache.v1.gpu_connector": _fix_create_connector,
                 "lmcache.integration.vllm.utils": _fix_torch_dev_on_cpu}
    return Profile(name=f"{version} (native HPU connector)", overlay={"is_available": _NATIVE_OFF},
                   module_overrides=dict(_STAND_INS), post_exec=post_exec)


def _generic(version: str | None) -> Profile:
    return Profile(name=f"{version} (generic)" if version else "generic")


#: (version predicate, profile factory): first match wins.
PROFILES: list[tuple[Callable[[tuple | None], bool], Callable[[str | None], Profile]]] = [
    (lambda v: v is not None and v < (0, 4, 3), _cuda_only),
    (lambda v: v is not None, _native_hpu),
    (lambda v: True, _generic),
]


def activate(rt: Any) -> Profile | None:
    if "lmcache" not in rt.scope.packages:
        return None
    version = lmcache_version()
    parsed = parse_version(version)
    for matches, factory in PROFILES:
        if matches(parsed):
            profile = factory(version)
            rt.overlay = dict(profile.overlay)
            rt.module_overrides = dict(profile.module_overrides)
            return profile
    return None
