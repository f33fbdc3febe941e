"""Backend resolution: turning a configuration into a complete, published-at-once ``Session``.

The backend is resolved lazily, on the first in-scope import (or at ``install()`` when torch is
already imported), so that a bootstrap never imports torch. ``resolve()`` builds everything a
session needs -- the backend, the ``Redirector`` with its proxies, the compat profile's additions --
*before* the runtime publishes it in one assignment: another thread can never see a half-built
session and execute an in-scope module unshimmed. ``auto`` without an HPU gives an idle session
(LMCache runs unmodified).

A ``Session`` is also the ``ctx`` of compat fix-ups (``hpu_shim.compat``): ``ctx.patches``,
``ctx.backend``, ``ctx.config``, ``ctx.cuda_proxy``, ``ctx.compat.name``. ``run_fixup`` applies
one fix-up; one that raises is logged and its patches rolled back, never breaking LMCache's import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

from .. import backends
from ..core.context import Redirector
from ..core.patches import PatchRegistry
from .config import Config

log = logging.getLogger("hpu_shim")

__all__ = ["Session", "resolve", "run_fixup"]


@dataclasses.dataclass
class Session:
    """One backend resolution: published whole, never mutated by compat."""

    config: Config
    backend: Any  # a hpu_shim.backends.Backend, or None: idle
    patches: PatchRegistry
    redirector: Redirector | None = None
    compat: Any = None  # the hpu_shim.compat.Profile chosen for the installed LMCache
    module_overrides: dict[str, Callable[[Any], None]] = dataclasses.field(default_factory=dict)
    post_exec: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cuda_proxy(self) -> Any:
        return self.redirector.cuda_proxy if self.redirector is not None else None


def resolve(config: Config, scope: Any, audit: Any, patches: PatchRegistry) -> Session:
    """Resolve ``config.backend`` and build the session (may raise BackendUnavailable for 'hpu')."""
    backend = backends.resolve(config.backend)
    if backend is None:
        log.info("hpu_shim: HPU_SHIM_BACKEND=auto and no HPU here (torch.hpu unavailable): staying idle, "
                 "LMCache runs unmodified")
        return Session(config, None, patches)
    from .. import compat

    profile = compat.select(scope.packages)
    redirector = Redirector(backend, audit, scope, strict=config.strict,
                            overlay=profile.overlay if profile is not None else None)
    session = Session(config, backend, patches, redirector, profile,
                      dict(profile.module_overrides) if profile is not None else {},
                      dict(profile.post_exec) if profile is not None else {})
    redirector.active = True
    log.info("hpu_shim active in pid %d: torch.cuda -> %s inside %s", os.getpid(), backend.module_name,
             ", ".join(scope.packages))
    return session


def run_fixup(session: Session, module: Any) -> None:
    """Apply the profile's fix-up for ``module`` (if any and if its precondition holds)."""
    fixup = session.post_exec.get(module.__name__)
    if fixup is None:
        return
    from .. import compat

    if not compat.applies(fixup, module, session):
        return
    mark = session.patches.checkpoint()
    try:
        compat.call(fixup, module, session)
    except Exception:
        undone = session.patches.rollback(mark)
        log.warning("hpu_shim: the compat fix-up %s for %s (LMCache %s) raised; it was undone (%s) and "
                    "%s runs as LMCache wrote it. Please report this with the traceback below.",
                    getattr(fixup, "__name__", fixup), module.__name__, getattr(session.compat, "name", "?"),
                    ", ".join(undone) or "nothing was patched", module.__name__, exc_info=True)
