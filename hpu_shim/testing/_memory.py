"""Device-memory accounting behind ``torch.hpu.memory_stats()`` (docs/gaudi-semantics.md "torch.hpu API").

Every host storage that backs an hpu tensor is registered once; a ``weakref.finalize``
on its (PyObject-preserved) ``UntypedStorage`` frees it when torch frees the storage,
so ``InUse`` follows real tensor lifetimes, views included (they share the storage).

Key set and formulas follow the bridge's ``hpu/memory.py``: ``mem_get_info = (Limit-InUse, Limit)``,
``memory_reserved == max_memory_reserved == Limit`` (Habana's allocator reserves the
whole pool up front).  The emulator has no pool, so ``TotalSystemAllocs/Frees``
mirror ``NumAllocs/NumFrees`` and ``TotalActiveAllocs`` mirrors ``ActiveAllocs``.
Allocations beyond ``Limit`` raise, like a real device OOM.
"""

from __future__ import annotations

import os
import threading
import weakref

GiB = 1 << 30
DEFAULT_LIMIT = 96 * GiB  # Gaudi2 HBM
STATS_KEYS = (
    "Limit", "InUse", "MaxInUse", "NumAllocs", "NumFrees", "ActiveAllocs",
    "MaxAllocSize", "TotalSystemAllocs", "TotalSystemFrees", "TotalActiveAllocs",
)


class HPUOutOfMemoryError(RuntimeError):
    """Raised when an allocation would exceed the emulated device memory Limit."""


class MemoryTracker:
    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, int] = {}  # id(host UntypedStorage) -> nbytes
        self.limit = int(limit)
        self.in_use = self.max_in_use = self.max_alloc_size = 0
        self.num_allocs = self.num_frees = 0

    def check(self, nbytes: int) -> None:
        """Raise before allocating ``nbytes`` if the device would run out of memory."""
        if self.in_use + nbytes > self.limit:
            raise HPUOutOfMemoryError(
                f"HPU out of memory (emulated): tried to allocate {nbytes} bytes with "
                f"{self.in_use} of {self.limit} bytes in use "
                "(limit: HPU_SHIM_FAKE_HPU_MEMORY or install_emulator(memory_limit=...))"
            )

    def track(self, storage) -> None:
        """Register a host storage backing hpu tensors (no-op if already known or empty)."""
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        with self._lock:
            if key in self._live:
                return
            self.check(nbytes)
            self._live[key] = nbytes
            self.in_use += nbytes
            self.num_allocs += 1
            self.max_in_use = max(self.max_in_use, self.in_use)
            self.max_alloc_size = max(self.max_alloc_size, nbytes)
        weakref.finalize(storage, self._free, key)

    def resized(self, storage) -> None:
        """Re-account a tracked storage whose size changed in place (resize_)."""
        key = id(storage)
        if key not in self._live:
            self.track(storage)
            return
        nbytes = storage.nbytes()
        with self._lock:
            grow = nbytes - self._live[key]
            if grow == 0:
                return
            if grow > 0:
                self.check(grow)
            self._live[key] = nbytes
            self.in_use += grow
            self.max_in_use = max(self.max_in_use, self.in_use)
            self.max_alloc_size = max(self.max_alloc_size, nbytes)

    def _free(self, key: int) -> None:
        with self._lock:
            nbytes = self._live.pop(key, 0)
            self.in_use -= nbytes
            self.num_frees += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            active = len(self._live)
            values = (
                self.limit, self.in_use, self.max_in_use, self.num_allocs, self.num_frees,
                active, self.max_alloc_size, self.num_allocs, self.num_frees, active,
            )
        return dict(zip(STATS_KEYS, values))

    def reset_peak(self) -> None:
        with self._lock:
            self.max_in_use = self.in_use
            self.max_alloc_size = max(self._live.values(), default=0)

    def reset_accumulated(self) -> None:
        with self._lock:
            self.num_allocs = self.num_frees = 0


def limit_from_env() -> int:
    raw = os.environ.get("HPU_SHIM_FAKE_HPU_MEMORY", "").strip()
    return int(raw) if raw else DEFAULT_LIMIT


TRACKER = MemoryTracker(DEFAULT_LIMIT)
