"""Event counters of the emulated HPU: what tests and benchmarks assert on.

Pure Python (no torch import) so that ``hpu_shim.testing.counters()`` is cheap and works before the
emulator is installed.  Every counter is documented twice: in ``COUNTER_DOCS`` below and in
``docs/gaudi-semantics.md`` ("Counters"), which also cites the bridge source each one models.

Compile accounting (docs/gaudi-semantics.md "Execution modes"):

* lazy mode: ops accumulate until ``mark_step`` or an implicit flush; the flushed graph is looked up
  in a process-wide cache keyed by its *signature* (see ``_lazy.graph_item``).  ``graph_flushes``
  counts launched graphs, ``graph_compiles`` the flushes that missed the cache, ``distinct_graphs``
  the distinct signatures flushed since the last reset.
* eager mode: every op dispatch runs at once; its per-op compile key is (op, dtypes, ranks), because
  shape-agnostic eager compilation is on by default.  ``eager_compiles`` counts keys seen for the first
  time in the process.

Both caches are process-wide and survive ``reset_counters()`` (as a real recipe cache does);
``clear_graph_cache()`` forgets them.

Device work in flight (docs/gaudi-semantics.md "Events and streams"): the emulator runs everything
at once on the host, but a real device finishes work later.  ``launch()`` numbers each piece of
launched work (a lazy graph, an eager kernel, a DMA copy); ``observe(seq)`` is what an event or
stream query sees: work not yet known to be finished is reported in flight once (False), and is
finished from then on; a synchronization finishes everything up to its point.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

#: Every plain counter with what it counts; the order is the snapshot order.
COUNTER_DOCS: dict[str, str] = {
    "mark_step_calls": "habana_frameworks.torch.core.mark_step calls (any mode; a no-op in eager)",
    "synchronize_calls": "torch.hpu.synchronize() calls",
    "stream_synchronize_calls": "torch.hpu.Stream.synchronize() calls",
    "event_synchronize_calls": "torch.hpu.Event.synchronize() calls",
    "h2d_bytes": "host -> device bytes copied (as torch sees them: numel * element size)",
    "d2h_bytes": "device -> host bytes copied",
    "h2d_copies": "host -> device copies",
    "d2h_copies": "device -> host copies",
    "hpu_ops": "aten op dispatches on hpu tensors (factories and copies included)",
    "graph_flushes": "lazy mode: non-empty graphs launched (mark_step or an implicit flush)",
    "graph_compiles": "lazy mode: flushes whose signature missed the process-wide graph cache",
    "blocking_d2h_copies": "device -> host copies that wait for the device (every d2h except "
                           "non_blocking=True ones the bridge runs asynchronously)",
    "bounce_buffer_bytes": "bytes staged through the bridge's host bounce buffer: every host<->device "
                           "copy whose host side does not start at a pinned allocation's first byte",
    "host_memcpy_bytes": "bytes the host CPU copies itself during host<->device copies (bounce-buffer "
                         "copy, making a strided host source contiguous); single-threaded on Gaudi",
    "int64_host_casts": "lazy mode with PT_ENABLE_INT64_SUPPORT off: int64 host<->device copies that "
                        "were cast on the host (int64 -> int32 on the way in, int32 -> int64 on the way out)",
    "int64_host_cast_bytes": "int64 bytes (host side) of those casts",
    "cpu_fallbacks": "op dispatches with no HPU kernel, run on the CPU by the bridge's fallback",
    "float64_downcasts": "times the bridge silently turned float64 data into float32 (a host->device "
                         "copy, a factory or an op producing float64 on the device)",
    "eager_compiles": "eager mode: distinct per-op compile keys (op, dtypes, ranks) seen for the first time",
    "event_record_flushes": "lazy mode: Event.record() on the current stream that flushed a non-empty graph",
}
#: Plain event counters, in snapshot order.
COUNTER_FIELDS: tuple[str, ...] = tuple(COUNTER_DOCS)
#: Derived field: distinct lazy graph signatures flushed since the last reset.
DERIVED_FIELDS: tuple[str, ...] = ("distinct_graphs",)
ALL_FIELDS: tuple[str, ...] = COUNTER_FIELDS + DERIVED_FIELDS

_lock = threading.RLock()
_values: dict[str, int] = dict.fromkeys(COUNTER_FIELDS, 0)
_pending: list[tuple] = []        # ops accumulated since the last flush (lazy mode)
_flushed: list[int] = []          # hash of each flushed signature since the last reset
_graph_cache: set = set()         # process-wide, like Gaudi's graph cache; survives reset
_eager_cache: set = set()         # process-wide per-op eager compile keys; survives reset
_graph_epoch = 0                  # bumped at every flush: tells graph-internal tensors from inputs
_launched = 0                     # pieces of device work launched so far (device state, not a counter)
_finished = 0                     # every piece up to this one is known to be finished


def bump(field: str, n: int = 1) -> None:
    with _lock:
        _values[field] += n


def record_op(item: tuple) -> int:
    """Append one op to the pending lazy graph; returns its index in that graph."""
    with _lock:
        _pending.append(item)
        return len(_pending) - 1


def graph_epoch() -> int:
    """Identifies the pending graph: changes whenever a graph is flushed."""
    return _graph_epoch


def flush() -> bool:
    """Close the pending lazy graph; returns True if a non-empty graph was launched."""
    global _graph_epoch
    with _lock:
        if not _pending:
            return False
        signature = hash(tuple(_pending))
        _pending.clear()
        _graph_epoch += 1
        launch()
        _values["graph_flushes"] += 1
        _flushed.append(signature)
        if signature not in _graph_cache:
            _graph_cache.add(signature)
            _values["graph_compiles"] += 1
        return True


def launch() -> int:
    """Note one piece of device work launched; returns its sequence number."""
    global _launched
    with _lock:
        _launched += 1
        return _launched


def launched() -> int:
    """Sequence number of the last launched work (what an event recorded now covers)."""
    return _launched


def finish(upto: int | None = None) -> None:
    """A synchronization: all work up to ``upto`` (default: everything launched) is finished."""
    global _finished
    with _lock:
        _finished = max(_finished, _launched if upto is None else upto)


def observe(seq: int) -> bool:
    """A query of work up to ``seq``: False once while it is in flight, then True (it finished)."""
    with _lock:
        if seq <= _finished:
            return True
    finish(seq)
    return False


def eager_compile(key: Hashable) -> bool:
    """Eager mode: note one op dispatch's compile key; True (and counted) on a cache miss."""
    with _lock:
        if key in _eager_cache:
            return False
        _eager_cache.add(key)
        _values["eager_compiles"] += 1
        return True


def pending_ops() -> int:
    """Number of ops accumulated in the current (not yet flushed) lazy graph."""
    return len(_pending)


def counters() -> dict[str, int]:
    """Snapshot of all counters (a new dict; safe to keep)."""
    with _lock:
        snap = dict(_values)
        snap["distinct_graphs"] = len(set(_flushed))
        return snap


def reset_counters() -> None:
    """Zero every counter and forget pending ops; the compile caches are kept (see clear_graph_cache)."""
    global _graph_epoch
    with _lock:
        for key in _values:
            _values[key] = 0
        _pending.clear()
        _flushed.clear()
        _graph_epoch += 1


def clear_graph_cache() -> None:
    """Forget compiled graphs and eager op compilations: the next of each counts as a compile."""
    with _lock:
        _graph_cache.clear()
        _eager_cache.clear()


class CountDelta:
    """Counter deltas over a ``with count()`` block; live inside the block, frozen after."""

    def __init__(self) -> None:
        self._start = counters()
        self._log_start = len(_flushed)
        self._final: dict[str, int] | None = None

    def as_dict(self) -> dict[str, int]:
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
