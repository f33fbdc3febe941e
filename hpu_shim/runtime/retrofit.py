"""Late install: in-scope modules imported before ``install()``.

Their code already ran with the real ``torch.cuda`` and was compiled without the rewrite tier, so
the runtime names them in a ``LateInstallWarning`` saying what could not be redirected, and
rebinds their module globals bound to ``torch``/``torch.cuda``/``torch.cuda.X`` to the proxies
(and the rewrite helper of code rewritten under an earlier install to this session's),
each change recorded in the undo log that ``uninstall()`` replays. ``unbind_all`` is the reverse
for modules the shim prepared itself.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Iterable

from .. import redirects
from ..core.patches import UndoLog
from ..core.rewrite import HELPER_NAME, RewriteRuntime

__all__ = ["LateInstallWarning", "retrofit", "warn_late", "unbind_all", "shorten"]


class LateInstallWarning(UserWarning):
    """In-scope modules were imported before the shim; some redirects could not be applied."""


def shorten(names: list[str], limit: int = 8) -> str:
    """``a, b, c ... (+N more)``: messages name what matters without echoing hundreds of modules."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


def retrofit(ctx: Any, names: Iterable[str], undo: UndoLog) -> list[str]:
    """Rebind module globals bound to torch/torch.cuda/torch.cuda.X; returns ``module.attr`` labels."""
    torch = sys.modules["torch"]
    by_id = {}
    for key in redirects.REDIRECTS:
        real = getattr(torch.cuda, key, None) if "." not in key else None
        if real is not None and not isinstance(real, (bool, int, str)):
            by_id[id(real)] = key
    done = []
    for name in names:
        ns = getattr(sys.modules.get(name), "__dict__", None)
        for attr, value in list((ns or {}).items()):
            if attr.startswith("__"):
                continue
            if attr == HELPER_NAME and isinstance(value, RewriteRuntime):  # rewritten under an earlier install
                new = ctx.helper
            elif value is torch:
                new = ctx.torch_proxy
            elif value is torch.cuda:
                new = ctx.cuda_proxy
            elif id(value) in by_id and value is getattr(torch.cuda, by_id[id(value)], None):
                new = ctx.redirect_for(by_id[id(value)])
            else:
                continue
            if new is not None:
                undo.set_item(ns, attr, new, f"{name}.{attr}")
                done.append(f"{name}.{attr}")
    return done


def warn_late(names: list[str], retrofitted: list[str]) -> None:
    missed = ("the rewrite tier (.to('cuda'), device='cuda', pin_memory=True in their code), "
              "decisions already taken at import (e.g. `if torch.cuda.is_available(): import lmcache.c_ops`), "
              "and import statements inside functions defined before install()")
    warnings.warn(
        f"hpu_shim installed after {len(names)} in-scope module(s) were imported: {shorten(names)}. "
        f"Retrofitted {len(retrofitted)} module global(s) bound to torch/torch.cuda; NOT redirected: {missed}. "
        f"Import hpu_shim before vLLM/LMCache (or use PYTHONPATH=<hpu_shim>/sitecustomize with HPU_SHIM=1).",
        LateInstallWarning, stacklevel=5,
    )


def unbind_all(ctx: Any, names: Iterable[str]) -> None:
    """Give every module the shim prepared its real builtins and torch objects back."""
    for name in names:
        ns = getattr(sys.modules.get(name), "__dict__", None)
        if ns is not None:
            ctx.unbind(ns)
