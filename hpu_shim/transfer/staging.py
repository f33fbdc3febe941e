"""Host staging buffers for host<->device copies: reused across calls, pinned where the device can pin, bounded.

On a Gaudi an unpinned host<->device copy goes through the bridge's bounce buffer plus a
single-threaded host copy, and a host buffer counts as pinned only when the copy starts at its
allocation's first byte (``docs/gaudi-semantics.md``). LMCache's memory objects are views into
one large arena, so copying to or from them directly is always the slow kind. The transfer path
therefore moves a batched call's KV through one staging buffer: one device<->host copy that starts
at the buffer's first byte, and multi-threaded host copies between the buffer and the memory
objects.

Memory bound: the pool keeps **one** host buffer and **one** device buffer per process, each at
most :data:`LIMIT` bytes (1 GiB by default, :func:`set_limit`), grown to the largest round seen
(rounded up to a power of two, capped at the limit) and reused by every later call. The transfer path splits a batched call whose
payload exceeds the limit into rounds of whole chunks (each round: its own index graph, transfer
graph and sync); a single chunk larger than the limit, or a call made while another thread holds
the buffer, gets a temporary buffer that is freed when the call ends. Plus one 64-byte buffer for
the device verdict of a retrieve, per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["LIMIT", "device_lease", "lease", "retained_bytes", "retained_device_bytes", "set_limit", "verdict_buffer"]

#: Most bytes the pool keeps between calls.
LIMIT = 1 << 30
_lock = threading.Lock()
_buffer: Any = None  # the retained uint8 buffer
_pinned = False
_busy = False
_verdict = threading.local()  # one small buffer per thread: verdicts of concurrent calls never mix


def set_limit(nbytes: int) -> None:
    """Change the retained-buffer bound (drops the current buffer if it is larger)."""
    global LIMIT, _buffer, _device_buffer
    if int(nbytes) < 0:
        raise ValueError(f"staging limit must be >= 0 bytes, got {nbytes}")
    with _lock:
        LIMIT = int(nbytes)
        if _buffer is not None and _buffer.numel() > LIMIT and not _busy:
            _buffer = None
        if (_device_buffer is not None and _device_buffer.numel() * _device_buffer.dtype.itemsize > LIMIT
                and not _device_busy):
            _device_buffer = None


def retained_bytes() -> int:
    """Bytes the pool holds between calls (what the bound above is about)."""
    with _lock:
        return 0 if _buffer is None else int(_buffer.numel())


def _allocate(nbytes: int, pinned: bool) -> Any:
    import torch

    return torch.empty(max(int(nbytes), 1), dtype=torch.uint8, pin_memory=pinned)


@contextmanager
def lease(nbytes: int, pinned: bool) -> Iterator[Any]:
    """A uint8 host tensor of ``nbytes`` that starts at its allocation's first byte, for one call."""
    global _buffer, _pinned, _busy
    nbytes = int(nbytes)
    take = False
    with _lock:
        if not _busy and nbytes <= LIMIT:
            take = _busy = True
            if _buffer is None or _buffer.numel() < nbytes or _pinned != pinned:
                _buffer = None  # free the old one before allocating its successor
                size = min(LIMIT, 1 << max(nbytes - 1, 0).bit_length())
                _buffer, _pinned = _allocate(size, pinned), pinned
            buf = _buffer
    if not take:
        buf = _allocate(nbytes, pinned)
    try:
        yield buf[:nbytes]
    finally:
        if take:
            with _lock:
                _busy = False


_device_buffer: Any = None
_device_busy = False


@contextmanager
def device_lease(numel: int, dtype: Any, device: Any) -> Iterator[Any]:
    """A device tensor of ``numel`` elements of ``dtype`` for one call: the device side of the staging.

    Kept between calls under the same bound as the host buffer (one buffer, <= LIMIT bytes), so a
    batched call does not allocate (and, on an emulated device, page-fault) its scratch each time.
    """
    import torch

    global _device_buffer, _device_busy
    nbytes = int(numel) * dtype.itemsize
    take = False
    with _lock:
        if not _device_busy and nbytes <= LIMIT:
            take = _device_busy = True
            buf = _device_buffer
            if buf is None or buf.dtype != dtype or buf.device != device or buf.numel() < numel:
                _device_buffer = None
                size = min(LIMIT // dtype.itemsize, 1 << max(int(numel) - 1, 0).bit_length())
                _device_buffer = buf = torch.empty(max(size, int(numel), 1), dtype=dtype, device=device)
    if not take:
        buf = torch.empty(max(int(numel), 1), dtype=dtype, device=device)
    try:
        yield buf[: int(numel)]
    finally:
        if take:
            with _lock:
                _device_busy = False


def retained_device_bytes() -> int:
    with _lock:
        return 0 if _device_buffer is None else _device_buffer.numel() * _device_buffer.dtype.itemsize


def verdict_buffer(pinned: bool) -> Any:
    """A small host tensor (its own allocation) that a device verdict is copied into."""
    import torch

    key = "pinned" if pinned else "plain"
    buf = getattr(_verdict, key, None)
    if buf is None:
        buf = torch.zeros(16, dtype=torch.int32, pin_memory=pinned)
        setattr(_verdict, key, buf)
    return buf
