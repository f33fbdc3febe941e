"""Activation: ``install()``/``uninstall()``, the process-wide runtime, and ``status()``.

Life cycle (idempotent both ways, in the OpenTelemetry ``instrument``/``uninstrument`` style):

* ``install()`` parses the configuration, puts the scoped finder first on ``sys.meta_path``
  and exports ``HPU_SHIM=1`` plus the ``sitecustomize`` directory on ``PYTHONPATH`` so spawned
  children (vLLM's EngineCore and workers) are shimmed too.
* The backend is resolved lazily, on the first in-scope import (or at once if torch is already
  imported), so that a bootstrap never has to import torch. ``auto`` without an HPU stays idle.
* In-scope modules imported before ``install()`` are named in a warning and retrofitted: their
  globals bound to ``torch``/``torch.cuda``/``torch.cuda.X`` are rebound, each change logged for undo.
* ``uninstall()`` removes the finder, restores every patched attribute exactly, replays the
  retrofit undo, unbinds proxies from shimmed modules and restores the environment.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import warnings
from typing import Any, Iterable

from .. import backends, redirects
from ..core import finder as _hook, proxy as _proxy, rewrite as _rewrite
from . import config as _config
from ..audit import Audit, Record, site_of
from ..core.scope import Scope
from ..core.patches import PatchRegistry, UndoLog
from ..errors import UnsupportedCudaAPI

log = logging.getLogger("hpu_shim")

__all__ = ["Runtime", "RUNTIME", "install", "uninstall", "status", "report", "bootstrap_dir",
           "LateInstallWarning", "CudaFallthroughWarning"]

_EXPORTED = ("HPU_SHIM", "HPU_SHIM_SCOPE", "HPU_SHIM_BACKEND", "HPU_SHIM_STRICT", "HPU_SHIM_REPORT",
             "HPU_SHIM_LOG_LEVEL", "HPU_SHIM_NATIVE_CONNECTOR", "HPU_SHIM_REMOTE_TIMEOUT", "PYTHONPATH")


class LateInstallWarning(UserWarning):
    """In-scope modules were imported before the shim; some redirects could not be applied."""


class CudaFallthroughWarning(UserWarning):
    """An in-scope torch.cuda API has no redirect; the real torch.cuda is used."""


def bootstrap_dir() -> str:
    """The directory holding the shim's sitecustomize.py (checkout layout, else installed layout)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkout = os.path.join(os.path.dirname(pkg), "sitecustomize")
    if os.path.isfile(os.path.join(checkout, "sitecustomize.py")):
        return checkout
    return os.path.join(pkg, "_sitecustomize")


class Runtime:
    """All process-wide shim state; one instance, ``RUNTIME``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.installed = False
        self.resolved = False
        self.active = False  # read on every proxied call: keep it a plain attribute
        self.config: _config.Config | None = None
        self.scope = Scope(())
        self.backend: backends.Backend | None = None
        self.audit = Audit()
        self.patches = PatchRegistry()
        self.undo = UndoLog()
        self.finder: _hook.ScopedFinder | None = None
        self.torch_proxy: Any = None
        self.cuda_proxy: Any = None
        self.device_type: Any = None
        self.hpu_proxy: Any = None
        self.builtins: dict | None = None
        self.helper: _rewrite.RewriteRuntime | None = None
        self.overlay: dict[str, redirects.Redirect] = {}
        self.module_overrides: dict[str, Any] = {}
        self.compat: Any = None
        self.shimmed: list[str] = []
        self.tensor_patch_reason: str | None = None
        self.late: list[str] = []
        self.stand_ins: list[str] = []
        self.unknown: dict[tuple[str, str], int] = {}
        self._redirect_cache: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._env_saved: dict[str, str | None] | None = None
        self._pin_sites: set[str] = set()
        self._atexit = False

    # ---- properties the hook reads ------------------------------------------------------------
    @property
    def hook_enabled(self) -> bool:
        return self.installed

    def module_override(self, fullname: str) -> Any:
        """A spec for a compat stand-in (e.g. ``lmcache.c_ops``), or None for the real module."""
        if fullname not in self.module_overrides and self.resolved:
            return None
        self.ensure_backend()
        build = self.module_overrides.get(fullname) if self.active else None
        return _hook.stand_in_spec(fullname, build, self) if build is not None else None

    # ---- install / uninstall --------------------------------------------------------------------
    def install(self, scope: Any = None, backend: str | None = None, strict: bool | None = None,
                *, _source: str = "api") -> dict:
        config = _config.load(scope=scope, backend=backend, strict=strict)
        with self.lock:
            if self.installed:
                if (scope, backend, strict) != (None, None, None) and config != self.config:
                    log.warning("hpu_shim is already installed (%s); call uninstall() before install() "
                                "to change scope, backend or strict", self._describe_config())
                return self.status()
            _config.apply_log_level(config)
            self.config = config
            self.scope = Scope(config.scope)
            self.source = _source
            if "torch" in sys.modules or config.backend == "hpu" and _source == "api":
                self._resolve()  # may raise BackendUnavailable: nothing is installed then
            self.finder = _hook.ScopedFinder(self)
            sys.meta_path.insert(0, self.finder)
            self.installed = True
            self._export_env()
            if config.report_path and not self._atexit:
                atexit.register(_write_report_at_exit)
                self._atexit = True
            late = [name for name in list(sys.modules) if name in self.scope and name not in self.shimmed]
            if late:
                self._late_install(sorted(late))
            log.debug("hpu_shim installed from %s: %s", _source, self._describe_config())
            return self.status()

    def uninstall(self) -> dict:
        with self.lock:
            if not self.installed:
                log.debug("hpu_shim.uninstall(): not installed; nothing to do")
                return self.status()
            if self.finder in sys.meta_path:
                sys.meta_path.remove(self.finder)
            self.active = False
            self.installed = False
            self.patches.restore_all()
            self.undo.replay()
            self._unbind_proxies()
            for proxy in (self.torch_proxy, self.cuda_proxy, self.hpu_proxy, *self._redirect_cache.values()):
                if isinstance(proxy, _proxy._ForwardingModule):
                    proxy._hpu_shim_clear()
            self._restore_env()
            if self.compat is not None:
                self.compat.deactivate(self)
            self.finder = None
            self.resolved = False
            self.backend = None
            self.overlay, self.module_overrides, self.compat = {}, {}, None
            self._redirect_cache.clear()
            self._descriptions.clear()
            self.shimmed, self.late, self.stand_ins = [], [], []
            self.tensor_patch_reason = None
            return self.status()

    def ensure_backend(self) -> None:
        if not self.resolved:
            with self.lock:
                if not self.resolved and self.installed:
                    self._resolve()

    def _resolve(self) -> None:
        assert self.config is not None
        backend = backends.resolve(self.config.backend)
        self.backend = backend
        self.resolved = True
        if backend is None:
            log.info("hpu_shim: HPU_SHIM_BACKEND=auto and no HPU here (torch.hpu unavailable): staying idle, "
                     "LMCache runs unmodified")
            return
        import torch

        self.torch_proxy = _proxy.TorchProxy(self, torch)
        self.cuda_proxy = _proxy.CudaProxy(self, torch.cuda)
        self.device_type = _proxy.make_device_type(self)
        self.hpu_proxy = _proxy.HpuProxy(self, torch.hpu) if backend.name == "hpu" else None
        self.builtins = _hook.shim_builtins(self)
        self.helper = _rewrite.RewriteRuntime(self)
        from .. import compat

        self.compat = compat.activate(self)
        self.active = True
        log.info("hpu_shim active in pid %d: torch.cuda -> %s inside %s", os.getpid(), backend.module_name,
                 ", ".join(self.scope.packages))

    # ---- what the hook and proxies call ----------------------------------------------------------
    def need_tensor_class_patch(self, reason: str) -> None:
        """Patch ``Tensor.cuda`` on the class, once, because in-scope code runs without the rewrite tier.

        The rewrite tier already turns ``x.cuda()`` written in LMCache's source into a redirect, so the
        class patch (a depth-1 caller check on *every* ``Tensor.cuda`` call in the process) is only put
        in when some in-scope code was compiled without it: modules imported before ``install()``, or
        loaded by a loader that has no source. Until then out-of-scope ``Tensor.cuda`` costs nothing.
        """
        if self.active and not self.patches.is_patched(sys.modules["torch"].Tensor, "cuda"):
            from ..core import tensor_patch

            tensor_patch.patch_tensor_cuda(self)
            self.tensor_patch_reason = reason

    def prepare_module(self, module: Any) -> None:
        d = module.__dict__
        d["__builtins__"] = self.builtins
        d[_rewrite.HELPER_NAME] = self.helper

    def note_stand_in(self, name: str) -> None:
        self.stand_ins.append(name)

    def note_shimmed(self, module: Any) -> None:
        """Called after an in-scope module ran: record it, then apply its compat fix-ups."""
        self.shimmed.append(module.__name__)
        fixup = getattr(self.compat, "post_exec", {}).get(module.__name__)
        if fixup is not None:
            fixup(module, self)

    def proxy_for_module(self, module: Any) -> Any:
        """``from torch[.cuda[.x]] import ...`` -> the proxy standing for that module."""
        torch = sys.modules["torch"]
        if module is torch:
            return self.torch_proxy
        if module is torch.cuda:
            return self.cuda_proxy
        name = getattr(module, "__name__", "")
        if name.startswith("torch.cuda."):
            key = name[len("torch.cuda."):]
            entry = redirects.lookup(key, self.overlay)
            if entry is not None and entry.kind == "namespace":
                return self.redirect_for(key)
        return module

    def redirect_for(self, key: str) -> Any:
        obj = self._redirect_cache.get(key)
        if obj is None:
            entry = redirects.lookup(key, self.overlay)
            if entry is None or not hasattr(self.backend, entry.op) and entry.kind != "namespace":
                return None
            obj = self._redirect_cache.setdefault(key, _proxy.make_redirect(self, key, entry))
        return obj

    def describe(self, op: str) -> str:
        text = self._descriptions.get(op)
        if text is None:
            text = self._descriptions[op] = self.backend.describe(op) if self.backend else op
        return text

    def unknown_api(self, key: str, frame: Any, real: Any, name: str) -> Any:
        api = f"torch.cuda.{key}"
        site = site_of(frame)
        assert self.config is not None
        if self.config.strict:
            raise UnsupportedCudaAPI(api, site, self.backend.name if self.backend else "?")
        first = (api, site) not in self.unknown
        self.unknown[(api, site)] = self.unknown.get((api, site), 0) + 1
        if first:
            warnings.warn_explicit(
                f"hpu_shim: {api} has no {self.backend.name if self.backend else ''} redirect; "
                f"falling through to the real torch.cuda ({site}). Set HPU_SHIM_STRICT=1 to make this an error.",
                CudaFallthroughWarning, frame.f_code.co_filename, frame.f_lineno,
                module=frame.f_globals.get("__name__"),
            )
        return getattr(real, name)

    def note_pin_dropped(self, frame: Any, what: str) -> None:
        """``what`` is ``"pin_memory="`` (a keyword) or ``"Tensor.pin_memory"`` (a method call)."""
        site = site_of(frame)
        keyword = what.endswith("=")
        target = ("pin_memory=False" if keyword else "tensor unchanged") + f" ({self.backend.name} cannot pin host memory)"
        self.audit.hit(frame, "modified", what, target, ("True",) if keyword else ())
        if site not in self._pin_sites:
            self._pin_sites.add(site)
            log.info("hpu_shim: %s dropped at %s: the %s backend has no pinned host memory",
                     "pin_memory=True" if keyword else "Tensor.pin_memory()", site, self.backend.name)

    # ---- late install ----------------------------------------------------------------------------
    def _late_install(self, names: list[str]) -> None:
        self.late = names
        done: list[str] = []
        if self.active:
            done = self._retrofit(names)
            self.need_tensor_class_patch(f"in-scope modules imported before install(): {', '.join(names[:3])}"
                                         + (" ..." if len(names) > 3 else ""))
        missed = ("the rewrite tier (.to('cuda'), device='cuda', pin_memory=True in their code), "
                  "decisions already taken at import (e.g. `if torch.cuda.is_available(): import lmcache.c_ops`), "
                  "and import statements inside functions defined before install()")
        warnings.warn(
            f"hpu_shim installed after {len(names)} in-scope module(s) were imported: {', '.join(names)}. "
            f"Retrofitted {len(done)} module global(s) bound to torch/torch.cuda; NOT redirected: {missed}. "
            f"Import hpu_shim before vLLM/LMCache (or use PYTHONPATH=<hpu_shim>/sitecustomize with HPU_SHIM=1).",
            LateInstallWarning, stacklevel=4,
        )

    def _retrofit(self, names: Iterable[str]) -> list[str]:
        torch = sys.modules["torch"]
        by_id = {}
        for key, entry in redirects.REDIRECTS.items():
            if "." in key:
                continue
            real = getattr(torch.cuda, key, None)
            if real is not None and not isinstance(real, (bool, int, str)):
                by_id[id(real)] = key
        done = []
        for name in names:
            module = sys.modules.get(name)
            ns = getattr(module, "__dict__", None)
            if ns is None:
                continue
            for attr, value in list(ns.items()):
                if attr.startswith("__"):
                    continue
                if value is torch:
                    new = self.torch_proxy
                elif value is torch.cuda:
                    new = self.cuda_proxy
                elif id(value) in by_id and value is getattr(torch.cuda, by_id[id(value)], None):
                    new = self.redirect_for(by_id[id(value)])
                else:
                    continue
                if new is not None:
                    label = f"{name}.{attr}"
                    self.undo.set_item(ns, attr, new, label)
                    done.append(label)
        return done

    def _unbind_proxies(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None:
            return
        for name in self.shimmed:
            ns = getattr(sys.modules.get(name), "__dict__", None)
            if ns is None:
                continue
            if ns.get("__builtins__") is self.builtins and self.builtins is not None:
                ns["__builtins__"] = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
            for attr, value in list(ns.items()):
                if value is self.torch_proxy:
                    ns[attr] = torch
                elif value is self.cuda_proxy:
                    ns[attr] = torch.cuda
                elif value is self.device_type:
                    ns[attr] = torch.device
                elif value is self.hpu_proxy and self.hpu_proxy is not None:
                    ns[attr] = torch.hpu
                elif _proxy.is_proxy_object(value) and attr in redirects.REDIRECTS and hasattr(torch.cuda, attr):
                    ns[attr] = getattr(torch.cuda, attr)

    # ---- environment -----------------------------------------------------------------------------
    def _export_env(self) -> None:
        assert self.config is not None
        self._env_saved = {k: os.environ.get(k) for k in _EXPORTED}
        os.environ.update(self.config.env_exports())
        site_dir = bootstrap_dir()
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if site_dir not in parts:
            os.environ["PYTHONPATH"] = os.pathsep.join([site_dir, *parts])

    def _restore_env(self) -> None:
        for key, value in (self._env_saved or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_saved = None

    # ---- observation -----------------------------------------------------------------------------
    def _describe_config(self) -> str:
        c = self.config
        return f"scope={','.join(c.scope)} backend={c.backend} strict={int(c.strict)}" if c else "unconfigured"

    def state(self) -> str:
        if not self.installed:
            return "uninstalled"
        if not self.resolved:
            return "pending"  # waiting for torch / the first in-scope import
        return "active" if self.active else "idle"

    def status(self) -> dict:
        c = self.config
        return {
            "state": self.state(),
            "active": self.active,
            "installed": self.installed,
            "backend": self.backend.name if self.backend else None,
            "backend_requested": c.backend if c else None,
            "device": self.backend.device_spec if self.backend else None,
            "scope": list(self.scope.packages),
            "strict": bool(c and c.strict),
            "shimmed_modules": list(self.shimmed),
            "late_modules": list(self.late),
            "patched_attributes": self.patches.describe() + [f"{label} (retrofit)" for label in self.undo.labels()],
            "tensor_cuda_class_patch": self.tensor_patch_reason,
            "stand_in_modules": list(self.stand_ins),
            "compat": getattr(self.compat, "name", None),
            "unknown_apis": [f"{api} @ {site} (x{n})" for (api, site), n in self.unknown.items()],
            "pid": os.getpid(),
        }


RUNTIME = Runtime()


def original_environ() -> dict:
    """The environment as it was before install() exported HPU_SHIM=1 and PYTHONPATH."""
    env = dict(os.environ)
    for key, value in (RUNTIME._env_saved or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def flush_report(path: str | None = None) -> int:
    """Append this process's audit (calls since the last flush) to ``path`` or ``HPU_SHIM_REPORT``.

    Runs at exit automatically; call it before ``os._exit`` or from a signal handler, which skip atexit.
    Returns the number of call sites written.
    """
    path = path or (RUNTIME.config.report_path if RUNTIME.config else None) or os.environ.get("HPU_SHIM_REPORT")
    if not path:
        return 0
    try:
        return RUNTIME.audit.write_jsonl(path, backend=RUNTIME.backend.name if RUNTIME.backend else None)
    except OSError as exc:
        log.warning("hpu_shim: could not append the audit to HPU_SHIM_REPORT=%s: %s", path, exc)
        return 0


def _write_report_at_exit() -> None:
    flush_report()


def install(scope: str | Iterable[str] | None = None, backend: str | None = None,
            strict: bool | None = None) -> dict:
    """Install the shim (idempotent). Explicit arguments win over ``HPU_SHIM_*``; returns ``status()``."""
    return RUNTIME.install(scope=scope, backend=backend, strict=strict)


def uninstall() -> dict:
    """Remove the hook and restore everything the shim changed (idempotent); returns ``status()``."""
    return RUNTIME.uninstall()


def status() -> dict:
    """What is patched and redirected right now."""
    return RUNTIME.status()


def report() -> list[Record]:
    """The redirected call sites of this process, one record per site with its call count."""
    return RUNTIME.audit.records()
