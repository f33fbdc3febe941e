"""Event counters of the emulated HPU: what tests and benchmarks assert on.

Pure Python (no torch import) so that ``hpu_shim.testing.counters()`` is cheap and
works before the emulator is installed.

Lazy-mode graph accounting (A3): on Gaudi in lazy mode, ops are accumulated and only
compiled/launched at ``mark_step`` or at an implicit flush (a device->host read or
a synchronize).  A graph is looked up in a cache keyed by its ops and input shapes;
a miss means a recompile.  We model that with a *signature* = tuple of
``(op name, input shapes, input dtypes)`` of the ops accumulated since the last flush.
``distinct_graphs`` counts distinct signatures flushed since the last reset, and
``graph_compiles`` counts flushes that missed the process-wide graph cache.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

#: Plain event counters, in snapshot order.
COUNTER_FIELDS: Tuple[str, ...] = (
    "mark_step_calls",           # habana_frameworks.torch.core.mark_step calls (any mode)
    "synchronize_calls",         # torch.hpu.synchronize()
    "stream_synchronize_calls",  # torch.hpu.Stream.synchronize()
    "event_synchronize_calls",   # torch.hpu.Event.synchronize()
    "h2d_bytes",                 # host -> device bytes copied
    "d2h_bytes",                 # device -> host bytes copied
    "h2d_copies",                # number of host -> device copies
    "d2h_copies",                # number of device -> host copies
    "hpu_ops",                   # aten ops executed on hpu tensors (incl. factories)
    "graph_flushes",             # lazy mode: non-empty graphs launched
    "graph_compiles",            # lazy mode: flushes whose signature missed the graph cache
)
#: Derived field: distinct lazy graph signatures flushed since the last reset.
DERIVED_FIELDS: Tuple[str, ...] = ("distinct_graphs",)
ALL_FIELDS: Tuple[str, ...] = COUNTER_FIELDS + DERIVED_FIELDS

_lock = threading.RLock()
_values: Dict[str, int] = dict.fromkeys(COUNTER_FIELDS, 0)
_pending: List[tuple] = []        # ops accumulated since the last flush (lazy mode)
_flushed: List[int] = []          # hash of each flushed signature since the last reset
_graph_cache: set = set()         # process-wide, like Gaudi's graph cache; survives reset


def bump(field: str, n: int = 1) -> None:
    with _lock:
        _values[field] += n


def record_op(item: tuple) -> None:
    """Append one op to the pending lazy graph (call only in lazy mode)."""
    with _lock:
        _pending.append(item)


def flush() -> bool:
    """Close the pending lazy graph; returns True if a non-empty graph was launched."""
    with _lock:
        if not _pending:
            return False
        signature = hash(tuple(_pending))
        _pending.clear()
        _values["graph_flushes"] += 1
        _flushed.append(signature)
        if signature not in _graph_cache:
            _graph_cache.add(signature)
            _values["graph_compiles"] += 1
        return True


def pending_ops() -> int:
    """Number of ops accumulated in the current (not yet flushed) lazy graph."""
    return len(_pending)


def counters() -> Dict[str, int]:
    """Snapshot of all counters (a new dict; safe to keep)."""
    with _lock:
        snap = dict(_values)
        snap["distinct_graphs"] = len(set(_flushed))
        return snap


def reset_counters() -> None:
    """Zero every counter and forget pending ops; the graph cache is kept (see clear_graph_cache)."""
    with _lock:
        for key in _values:
            _values[key] = 0
        _pending.clear()
        _flushed.clear()


def clear_graph_cache() -> None:
    """Forget compiled graphs, so the next flush of any signature counts as a compile."""
    with _lock:
        _graph_cache.clear()


class CountDelta:
    """Counter deltas over a ``with count()`` block; live inside the block, frozen after."""

    def __init__(self) -> None:
        self._start = counters()
        self._log_start = len(_flushed)
        self._final: Dict[str, int] | None = None

    def as_dict(self) -> Dict[str, int]:
        if self._final is not None:
            return dict(self._final)
        now = counters()
        delta = {k: now[k] - self._start[k] for k in COUNTER_FIELDS}
        with _lock:
            delta["distinct_graphs"] = len(set(_flushed[self._log_start:]))
        return delta

    def _freeze(self) -> None:
        self._final = self.as_dict()

    def __getattr__(self, name: str) -> int:
        if name in ALL_FIELDS:
            return self.as_dict()[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"CountDelta({self.as_dict()})"


@contextmanager
def count() -> Iterator[CountDelta]:
    """``with count() as c: ...`` -> ``c.h2d_bytes`` etc. are the deltas within the block.

    Calling reset_counters() inside the block makes the deltas meaningless.
    """
    delta = CountDelta()
    try:
        yield delta
    finally:
        delta._freeze()
