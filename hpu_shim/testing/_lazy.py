"""Execution mode (lazy vs eager), ``mark_step`` and compile keys (docs/gaudi-semantics.md "Execution modes").

* The mode comes from ``PT_HPU_LAZY_MODE``, read once at emulator install exactly as the bridge reads
  it (``_profile``); unset means the profile's default: eager for ``latest`` (current docs, vllm-gaudi),
  lazy for the 1.18/1.19 profiles.  Real Gaudi picks the lazy or eager plugin library at import and
  cannot switch later.
* ``mark_step``/``iter_mark_step``/``add_step_closure`` are ``@lazy_only``: in eager mode they do
  nothing, and the bridge logs one WARNING per function when it *decorates* them (at import), which
  the emulator reproduces at install.
* Lazy mode: every op joins the pending graph as an *item* that keeps what the bridge's graph hash
  keeps (op, input ranks/dtypes/shapes, which pending op produced each input, constant values, int
  lists, tensor-list shapes, ``out=`` tensors, factory sizes).  Eager mode: every op dispatch has a
  per-op compile key (op, dtypes, ranks); shapes are not in it (shape-agnostic eager graphs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from . import _counters, _profile

_LOG = logging.getLogger("habana_frameworks.torch.utils.internal")
EAGER_WARNING = (
    "Calling mark_step function does not have any effect. "
    "It's lazy mode only functionality. (warning logged once)"
)
#: The functions the bridge wraps with ``lazy_only`` (habana_frameworks/torch/core/step_closure.py).
LAZY_ONLY = ("add_step_closure", "mark_step", "iter_mark_step")

_mode_lock = threading.Lock()
_lazy: bool | None = None
_step_closures: list[tuple[Callable, tuple]] = []


def configure_from_env(profile: str | None = None) -> bool:
    """Fix the mode once (the bridge reads it once); later calls keep the first answer."""
    global _lazy
    with _mode_lock:
        if _lazy is None:
            _lazy = _profile.from_environ(profile).lazy
            if not _lazy:
                for name in LAZY_ONLY:  # what lazy_only logs while decorating, eager mode only
                    _LOG.warning(EAGER_WARNING.replace("mark_step", name, 1))
        return _lazy


def is_lazy() -> bool:
    return bool(_lazy)


def mark_step(device_str: str = "", sync: bool = False) -> None:
    """Flush the accumulated lazy graph (compile on cache miss) and run step closures; eager: nothing.

    ``sync`` only waits for host-side execution on Gaudi; it is NOT a device synchronize, so it does
    not count as one here either.
    """
    _counters.bump("mark_step_calls")
    if not is_lazy():
        return
    _counters.flush()
    closures, _step_closures[:] = list(_step_closures), []
    for fn, args in closures:
        fn(*args)


def iter_mark_step(device_str: str = "") -> None:
    """Lazy-only alias used by Habana's training loops."""
    mark_step(device_str)


def add_step_closure(closure: Callable, args: tuple = (), run_async: bool = False) -> None:
    """Run ``closure(*args)`` at the next mark_step (lazy only; eager: nothing)."""
    if is_lazy():
        _step_closures.append((closure, tuple(args)))


def implicit_flush() -> bool:
    """Lazy mode: a device->host read or a synchronize launches the pending graph."""
    return is_lazy() and _counters.flush()


# -- compile keys ----------------------------------------------------------------------------
#: Types whose value is a graph constant (part of the lazy key as is).
_CONSTANT_TYPES = (bool, int, float, complex, str, type(None))


def _const(value: Any, node_of: Callable[[Any], Any]) -> Any:
    """What the lazy graph hash keeps of one argument."""
    if isinstance(value, _CONSTANT_TYPES):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_const(v, node_of) for v in value)
    node = node_of(value)
    if node is not None:
        return node
    return repr(value)  # dtype, device, layout, memory_format, generator ...: their identity


def graph_item(label: str, args: tuple, kwargs: dict, node_of: Callable[[Any], Any],
               scalar_inputs: tuple[int, ...] = ()) -> tuple:
    """One op of a lazy graph; ``node_of(x)`` describes a tensor argument (None for non-tensors).

    Scalars at ``scalar_inputs`` (the op's ``scalar_ids`` in the bridge's op list) become graph
    inputs, so only their type is in the key; every other scalar is a constant, value included.
    """
    keyed = tuple(("scalar", type(a).__name__) if i in scalar_inputs and isinstance(a, (int, float, bool))
                  else _const(a, node_of) for i, a in enumerate(args))
    return (label, keyed, tuple(sorted((k, _const(v, node_of)) for k, v in kwargs.items())))


def eager_key(label: str, tensors: list[Any]) -> tuple:
    """Eager per-op compile key: op, dtypes and ranks of its tensor arguments (no shapes)."""
    return (label, tuple(str(t.dtype) for t in tensors), tuple(t.dim() for t in tensors))
