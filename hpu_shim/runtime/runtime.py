"""``Runtime``: the process-wide shim, a thin composition of the parts, and the public API.

It implements ``core.protocols.HookHost`` for the import hook and composes: the configuration
(``config``), the scoped finder (``core.finder``), one ``Session`` built whole by backend
resolution (``activation``), the exported environment (``environment``), the late-install
retrofit (``retrofit``) and the exit report (``lifecycle``). ``install()``/``uninstall()`` are
idempotent both ways (OpenTelemetry's ``instrument``/``uninstrument`` style); explicit arguments
to ``install()`` win, re-installing if the shim is already on. See ``docs/architecture.md``.
"""

from __future__ import annotations

import _imp
import contextlib
import logging
import os
import sys
import threading
from typing import Any, Iterable

from . import activation, config as _config, environment, retrofit
from .lifecycle import ExitReport
from ..audit import Audit, Record
from ..core import finder as _finder, tensor_patch
from ..core.context import CudaFallthroughWarning
from ..core.patches import PatchRegistry, UndoLog
from ..core.scope import Scope
from .retrofit import LateInstallWarning

log = logging.getLogger("hpu_shim")

__all__ = ["Runtime", "RUNTIME", "install", "uninstall", "status", "report", "flush_report", "bootstrap_dir",
           "original_environ", "bootstrap_install", "LateInstallWarning", "CudaFallthroughWarning"]
bootstrap_dir = environment.bootstrap_dir


class Runtime:
    """All process-wide shim state; one instance, ``RUNTIME``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.installed, self.config, self.scope, self.source = False, None, Scope(()), None
        self.audit, self.patches, self.undo = Audit(), PatchRegistry(), UndoLog()
        self.finder: _finder.ScopedFinder | None = None
        self.session: activation.Session | None = None  # published whole (see activation)
        self.exported: environment.Exported | None = None
        self.report = ExitReport(self.audit, lambda: self.backend.name if self.backend else None)
        self.shimmed, self.late, self.stand_ins, self.not_redirected_lines = [], [], [], []
        self.tensor_patch_reason: str | None = None
        self._resolving = threading.local()

    backend = property(lambda self: self.session.backend if self.session else None)
    compat = property(lambda self: self.session.compat if self.session else None)
    hook_enabled = property(lambda self: self.installed)

    @contextlib.contextmanager
    def locked(self):
        """The import lock, then the runtime lock: the order find_spec (which runs under the import
        lock) takes them in, so resolving outside an import (late install) can never deadlock with it,
        and no thread can import an in-scope module while a session is being built."""
        _imp.acquire_lock()
        try:
            with self.lock:
                yield
        finally:
            _imp.release_lock()

    @property
    def active(self) -> bool:
        red = self.session.redirector if self.session else None
        return bool(red and red.active)

    # ---- install / uninstall ------------------------------------------------------------------
    def install(self, scope: Any = None, backend: str | None = None, strict: bool | None = None,
                *, _source: str = "api") -> dict:
        config = _config.load(scope=scope, backend=backend, strict=strict)
        with self.locked():
            if self.installed:
                given = {f: v for f, v in (("scope", scope), ("backend", backend), ("strict", strict)) if v is not None}
                if all(getattr(config, f) == getattr(self.config, f) for f in given):
                    return self.status()
                log.info("hpu_shim: re-installing with the explicit install() arguments %s", given)
                self.uninstall()
            _config.apply_log_level(config)
            new_scope = Scope(config.scope)
            eager = "torch" in sys.modules or config.backend == "hpu" and _source == "api"
            session = activation.resolve(config, new_scope, self.audit, self.patches) if eager else None
            self.config, self.scope, self.source, self.session = config, new_scope, _source, session
            self.finder = _finder.ScopedFinder(self)
            sys.meta_path = _finder.FirstOnMetaPath([self.finder, *sys.meta_path], self.finder)
            self.installed = True
            self.exported = environment.Exported(config.env_exports())
            self.report.arm(config.report_path)
            late = sorted(n for n in list(sys.modules) if n in self.scope and n not in self.shimmed)
            if late:
                self._late_install(late)
            log.debug("hpu_shim installed from %s: %s", _source, self.status()["config"])
            return self.status()

    def uninstall(self) -> dict:
        with self.locked():
            if not self.installed:
                return self.status()
            sys.meta_path = [f for f in sys.meta_path if f is not self.finder]
            self.installed = False
            red = self.session.redirector if self.session else None
            if red is not None:
                red.deactivate()
            self.patches.restore_all()
            self.undo.replay()
            if red is not None:
                retrofit.unbind_all(red, self.shimmed)
            self.exported.restore()
            self.report.disarm()
            self.finder = self.session = self.exported = self.tensor_patch_reason = None
            self.shimmed, self.late, self.stand_ins, self.not_redirected_lines = [], [], [], []
            return self.status()

    def _late_install(self, names: list[str]) -> None:
        self.late, ctx, done = names, self.ensure_backend(), []
        if ctx is not None:
            done = retrofit.retrofit(ctx, names, self.undo)
            self.need_tensor_class_patch(f"in-scope modules imported before install(): {retrofit.shorten(names, 3)}")
        retrofit.warn_late(names, done)

    # ---- HookHost: what the import hook asks -------------------------------------------------------
    def ensure_backend(self) -> Any:
        if self.session is None and self.installed and not getattr(self._resolving, "on", False):
            with self.locked():
                if self.session is None and self.installed:
                    self._resolving.on = True
                    try:
                        self.session = activation.resolve(self.config, self.scope, self.audit, self.patches)
                    finally:
                        self._resolving.on = False
                    self.report.recheck_signal()
        red = self.session.redirector if self.session else None
        return red if red is not None and red.active else None

    def module_override(self, fullname: str) -> Any:
        return self.session.module_overrides.get(fullname) if self.ensure_backend() is not None else None

    def note_stand_in(self, name: str) -> None:
        self.stand_ins.append(name)

    def note_shimmed(self, name: str, module: Any, ctx: Any) -> None:
        """An in-scope module ran shimmed: record it, then apply its compat fix-up."""
        session = self.session
        if session is not None and ctx is session.redirector:
            self.shimmed.append(name)
            if module is not None:
                activation.run_fixup(session, module)

    def need_tensor_class_patch(self, reason: str) -> None:
        """Patch ``Tensor.cuda`` on the class, once: in-scope code runs without the rewrite tier
        (late modules, no source, another library's loader). Until then out-of-scope calls cost nothing."""
        ctx = self.ensure_backend()
        with self.locked():
            if ctx is not None and not self.patches.is_patched(sys.modules["torch"].Tensor, "cuda"):
                tensor_patch.patch_tensor_cuda(ctx, self.patches)
                self.tensor_patch_reason = reason

    def not_redirected(self, module_name: str, what: str) -> None:
        """Name what the shim cannot redirect in ``module_name``: once, at WARNING, and in ``status()``."""
        if what not in self.not_redirected_lines:
            self.not_redirected_lines.append(what)
            log.warning("hpu_shim cannot redirect everything in %s", what)

    def status(self) -> dict:
        return describe(self)


def describe(rt: Runtime) -> dict:
    """``status()``: what is installed, patched, redirected and not redirected in this process."""
    c, red = rt.config, rt.session.redirector if rt.session else None
    state = "uninstalled" if not rt.installed else "pending" if rt.session is None else \
        "active" if rt.active else "idle"
    return {
        "state": state, "active": rt.active, "installed": rt.installed,
        "backend": rt.backend.name if rt.backend else None,
        "backend_requested": c.backend if c else None,
        "device": rt.backend.device_spec if rt.backend else None,
        "scope": list(rt.scope.packages), "strict": bool(c and c.strict),
        "config": f"scope={','.join(c.scope)} backend={c.backend} strict={int(c.strict)}" if c else None,
        "shimmed_modules": list(rt.shimmed), "late_modules": list(rt.late),
        "patched_attributes": rt.patches.describe() + [f"{x} (retrofit)" for x in rt.undo.labels()],
        "tensor_cuda_class_patch": rt.tensor_patch_reason, "stand_in_modules": list(rt.stand_ins),
        "not_redirected": list(rt.not_redirected_lines), "compat": getattr(rt.compat, "name", None),
        "unknown_apis": [f"{api} @ {site} (x{n})" for (api, site), n in (red.unknown if red else {}).items()],
        "pid": os.getpid(),
    }


RUNTIME = Runtime()


def install(scope: str | Iterable[str] | None = None, backend: str | None = None,
            strict: bool | None = None) -> dict:
    """Install the shim (idempotent). Explicit arguments win over ``HPU_SHIM_*`` (re-installing if
    needed); returns ``status()``."""
    return RUNTIME.install(scope=scope, backend=backend, strict=strict)


def uninstall() -> dict:
    """Remove the hook and restore everything the shim changed (idempotent); returns ``status()``."""
    return RUNTIME.uninstall()


def status() -> dict:
    """What is patched, redirected and not redirected right now."""
    return RUNTIME.status()


def report() -> list[Record]:
    """The redirected call sites of this process, one record per site with its call count."""
    return RUNTIME.audit.records()


def flush_report(path: str | None = None) -> int:
    """Append this process's audit (calls since the last flush) to ``path`` or ``HPU_SHIM_REPORT``.

    Runs at exit and on SIGTERM automatically; call it before ``os._exit``, which skips both.
    Returns the number of call sites written.
    """
    return RUNTIME.report.flush(path)


def bootstrap_install() -> dict:
    """What the container bootstrap (sitecustomize) calls: install, but never import torch now."""
    return RUNTIME.install(_source="bootstrap")


def original_environ() -> dict:
    """The environment as it was before install() exported HPU_SHIM=1 and PYTHONPATH."""
    return RUNTIME.exported.original() if RUNTIME.exported else dict(os.environ)
