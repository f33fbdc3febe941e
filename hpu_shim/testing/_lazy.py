"""Execution mode (lazy vs eager) and ``mark_step``, per hpu_ecosystem.md A3.

* The mode comes from ``PT_HPU_LAZY_MODE`` and is fixed once, at emulator install:
  real Gaudi picks the lazy or eager plugin .so at import and cannot switch later (A3).
* Default is eager (``"0"``), as current Habana docs and vllm-gaudi state.  NOTE: SW
  1.17 defaulted to lazy (``os.getenv("PT_HPU_LAZY_MODE", "1")``); set the env var
  explicitly to emulate an old stack.
* ``mark_step``/``iter_mark_step``/``add_step_closure`` are ``@lazy_only`` (A3): in
  eager mode they do nothing and the first call logs one WARNING.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, List, Optional, Tuple

from . import _counters

_LOG = logging.getLogger("habana_frameworks.torch.utils.internal")
EAGER_WARNING = (
    "Calling mark_step function does not have any effect. "
    "It's lazy mode only functionality. (warning logged once)"
)

_mode_lock = threading.Lock()
_lazy: Optional[bool] = None
_warned = False
_step_closures: List[Tuple[Callable, tuple]] = []


def configure_from_env() -> bool:
    """Read PT_HPU_LAZY_MODE once (A3: mode fixed at import); later calls keep the first answer."""
    global _lazy
    with _mode_lock:
        if _lazy is None:
            _lazy = os.environ.get("PT_HPU_LAZY_MODE", "0") != "0"
        return _lazy


def is_lazy() -> bool:
    return bool(_lazy)


def _warn_once_if_eager() -> bool:
    """Return True when the caller must do nothing (eager mode)."""
    global _warned
    if is_lazy():
        return False
    with _mode_lock:
        if not _warned:
            _warned = True
            _LOG.warning(EAGER_WARNING)
    return True


def mark_step(device_str: str = "", sync: bool = False) -> None:
    """A3: flush the accumulated lazy graph (compile on cache miss) and run step closures.

    ``sync`` only waits for host-side execution on Gaudi; it is NOT a device
    synchronize, so it does not count as one here either.
    """
    _counters.bump("mark_step_calls")
    if _warn_once_if_eager():
        return
    _counters.flush()
    closures, _step_closures[:] = list(_step_closures), []
    for fn, args in closures:
        fn(*args)


def iter_mark_step(device_str: str = "") -> None:
    """A3: lazy-only alias used by Habana's training loops."""
    mark_step(device_str)


def add_step_closure(closure: Callable, args: tuple = (), run_async: bool = False) -> None:
    """A3: run ``closure(*args)`` at the next mark_step (lazy only; eager: no-op + warning)."""
    if _warn_once_if_eager():
        return
    _step_closures.append((closure, tuple(args)))


def implicit_flush() -> None:
    """Lazy mode: a device->host read or a synchronize launches the pending graph."""
    if is_lazy():
        _counters.flush()
