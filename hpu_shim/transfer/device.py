"""What the transfer path needs to know about the device the KV cache lives on, decided once per device type.

A Gaudi differs from the CPU backend in ways that change *how* KV is moved, not what is moved
(``docs/gaudi-semantics.md``): in lazy mode (``PT_HPU_LAZY_MODE=1``) every ``mark_step`` launches a
graph and every new shape signature compiles one, so index lengths are bucketed and the two graphs
(index, transfer) are closed explicitly; in eager mode (the default) ``mark_step`` does nothing and
bucket padding is pure overhead. Long is held as int32 in lazy mode and cast on the host at every
host->device copy, so indices cross to the device as int32. float64/complex are not HPU dtypes, so the
16-byte word trick of the CPU kernels stays on the CPU. Pinned host memory exists on newer bridges
(probed once, by allocating); unpinned copies cost a bounce buffer and a single-threaded host copy.
The mode is read the way the bridge reads it: ``habana_frameworks.torch.utils.internal.is_lazy()``
when importable, else ``PT_HPU_LAZY_MODE`` (unset = eager).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["DeviceFacts", "facts", "is_lazy", "pinning_supported"]


class DeviceFacts(NamedTuple):
    """How to drive one device type; see the module docstring for why each field exists."""

    kind: str  # "cpu", "hpu", or another torch device type (treated as an eager device)
    lazy: bool  # pad index lengths to buckets and close graphs with mark_step
    index_dtype: Any  # dtype host indices cross to the device in (int32 on HPU; widened there)
    word_views: bool  # rows may be reinterpreted as 16-/8-byte words (CPU only)
    pinned: bool  # staging buffers can be pinned (probed)
    mark_step: Callable[[], None]  # closes a lazy graph; a no-op where there is none
    synchronize: Callable[[], None]  # waits for the device; a no-op on CPU


def _nothing() -> None:
    pass


def is_lazy() -> bool:
    """Lazy mode as the bridge reports it (``is_lazy()``), else from ``PT_HPU_LAZY_MODE`` (unset: eager)."""
    try:
        from habana_frameworks.torch.utils.internal import is_lazy as bridge_is_lazy
    except ImportError:
        return os.environ.get("PT_HPU_LAZY_MODE", "0") not in ("", "0")
    return bool(bridge_is_lazy())


_probe_lock = threading.Lock()
_pinning: dict = {}


def pinning_supported(kind: str) -> bool:
    """Probe once per device type whether ``torch.empty(pin_memory=True)`` really pins for it."""
    with _probe_lock:
        if kind not in _pinning:
            _pinning[kind] = _probe_pinning(kind)
        return _pinning[kind]


def _probe_pinning(kind: str) -> bool:
    import torch

    if kind == "cpu":
        return False  # nothing to pin for: the cpu backend never copies to a device
    try:
        t = torch.empty(16, dtype=torch.uint8, pin_memory=True)
        return bool(t.is_pinned())
    except (RuntimeError, NotImplementedError, TypeError):  # "doesn't support pinned memory", no accelerator
        return False


def _hpu_calls(lazy: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    import torch

    mark_step = _nothing
    if lazy:
        from habana_frameworks.torch.core import mark_step as bridge_mark_step

        mark_step = bridge_mark_step
    return mark_step, torch.hpu.synchronize


@functools.cache
def _facts(kind: str, lazy: bool) -> DeviceFacts:
    import torch

    if kind == "cpu":
        return DeviceFacts("cpu", False, torch.int64, True, False, _nothing, _nothing)
    if kind == "hpu":
        mark_step, synchronize = _hpu_calls(lazy)
        return DeviceFacts("hpu", lazy, torch.int32, False, pinning_supported("hpu"), mark_step, synchronize)
    module = getattr(torch, kind, None)
    synchronize = getattr(module, "synchronize", _nothing)
    return DeviceFacts(kind, False, torch.int64, False, pinning_supported(kind), _nothing, synchronize)


def facts(device: Any) -> DeviceFacts:
    """Facts for ``device`` (a ``torch.device`` or anything with ``.type``); the mode is read per call."""
    kind = device.type
    return _facts(kind, is_lazy() if kind == "hpu" else False)
