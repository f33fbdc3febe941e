"""Pinned host memory and the cost of host<->device copies (docs/gaudi-semantics.md "Pinned memory and copies").

On bridge builds for PyTorch >= 2.5 (profile ``1.19.0`` and ``latest``) the HPU provides torch's pinned
host allocator.  The bridge decides "pinned" by looking the pointer up among its host allocations:
only an allocation's first byte counts.  torch's ``is_pinned()`` asks with the *storage* start, so a
view into a pinned buffer says True; but the copy path asks with the tensor's own ``data_ptr()``, so a
copy from such a view (offset > 0) is staged like unpinned memory: the bridge takes a bounce buffer
from its host pool and copies the bytes into it (H2D) or out of it (D2H) on one host thread.

The emulator keeps a registry of pinned allocation starts (removed when the storage dies) and
installs three kernels: ``is_pinned`` and ``_pin_memory`` for CPU tensors, and a ``BackendSelect``
kernel for ``empty.memory_format``/``empty_strided`` that serves ``pin_memory=True`` (torch's CPU-only
build has no pinned allocator for a Python backend).  Every other factory call goes to torch's own
BackendSelect kernel untouched.  ``account_h2d``/``account_d2h`` count what one copy costs.
"""

from __future__ import annotations

import threading
import weakref

import torch

from . import _counters

PIN_UNSUPPORTED = (
    "habana allocator doesn't support pinned memory (emulated HPU, profile {profile}): this bridge release "
    "has no pinned host allocator (it arrived with bridge 1.19 on PyTorch >= 2.5); allocate with "
    "pin_memory=False, or pick a newer profile (docs/gaudi-semantics.md, Pinned memory and copies)"
)
DEVICE_PIN_ERROR = (
    "Only dense CPU tensors can be pinned [emulated HPU: pin_memory=True asks for pinned *host* memory; "
    "device tensors cannot be pinned (docs/gaudi-semantics.md, Pinned memory and copies)]"
)


class PinnedRegistry:
    """Start address -> size of every live pinned host allocation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: dict[int, int] = {}

    def register(self, storage: torch.UntypedStorage) -> None:
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if not ptr or not nbytes:
            return  # a zero-byte allocation has no pointer: never pinned (host_memory::is_host_memory)
        with self._lock:
            self._starts[ptr] = nbytes
        weakref.finalize(storage, self._forget, ptr)

    def _forget(self, ptr: int) -> None:
        with self._lock:
            self._starts.pop(ptr, None)

    def is_allocation_start(self, ptr: int) -> bool:
        with self._lock:
            return ptr in self._starts

    def __len__(self) -> int:
        return len(self._starts)


REGISTRY = PinnedRegistry()
_state = {"available": True, "profile": ""}


def copy_is_pinned(host: torch.Tensor) -> bool:
    """The bridge's test on the host side of a copy: ``data_ptr()`` is a pinned allocation's start."""
    return REGISTRY.is_allocation_start(host.data_ptr())


def account_h2d(src: torch.Tensor, staged_bytes: int, staged_is_src: bool) -> None:
    """One host->device copy: bounce buffer + host memcpy unless the bytes leave from a pinned start.

    ``staged_is_src`` is False when the bridge first made a new host tensor (contiguous or cast):
    that temporary is never pinned.
    """
    if not (staged_is_src and copy_is_pinned(src)):
        _counters.bump("bounce_buffer_bytes", staged_bytes)
        _counters.bump("host_memcpy_bytes", staged_bytes)


def account_d2h(dst: torch.Tensor, staged_bytes: int, blocking: bool) -> None:
    """One device->host copy into ``dst``: bounce buffer + host memcpy unless ``dst`` is a pinned start."""
    if blocking:
        _counters.bump("blocking_d2h_copies")
    if not copy_is_pinned(dst):
        _counters.bump("bounce_buffer_bytes", staged_bytes)
        _counters.bump("host_memcpy_bytes", staged_bytes)


# -- kernels ---------------------------------------------------------------------------------
def _refuse_if_unavailable() -> None:
    if not _state["available"]:
        raise RuntimeError(PIN_UNSUPPORTED.format(profile=_state["profile"]))


def _is_pinned(self, device=None) -> bool:
    """torch asks with the storage start (aten/src/ATen/native/Memory.cpp)."""
    return REGISTRY.is_allocation_start(self.untyped_storage().data_ptr())


def _pin_memory(self, device=None):
    """A pinned allocation with the same sizes and strides, then a host copy (as torch does)."""
    _refuse_if_unavailable()
    out = torch.empty_strided(self.size(), self.stride(), dtype=self.dtype, pin_memory=True)
    out.copy_(self)
    return out


def _backend_select(name: str):
    """Wrap torch's own BackendSelect kernel: ``pin_memory=True`` on the host gets a pinned allocation."""
    original = torch._C._dispatch_get_computed_kernel_for_dispatch_key(
        f"aten::{name}", torch._C.DispatchKey.BackendSelect)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.BackendSelect)

    def kernel(*args, **kwargs):
        if not kwargs.get("pin_memory"):
            return original.call_boxed(keys, *args, **kwargs)
        device = kwargs.get("device")
        if device is not None and torch.device(device).type != "cpu":
            return original.call_boxed(keys, *args, **kwargs)  # the device kernel refuses it
        _refuse_if_unavailable()
        kwargs["pin_memory"] = False
        out = original.call_boxed(keys, *args, **kwargs)
        REGISTRY.register(out.untyped_storage())
        return out

    return kernel


_LIBS: list = []


def register(available: bool, profile: str) -> None:
    """Install the kernels once; ``available`` is the profile's ``pinned_allocator``."""
    _state.update(available=available, profile=profile)
    if _LIBS:
        return
    lib = torch.library.Library("aten", "IMPL")
    # is_pinned/_pin_memory are CompositeExplicitAutograd in torch: a CPU kernel takes precedence
    # for CPU tensors without overriding anything else.
    lib.impl("is_pinned", _is_pinned, "CPU")
    lib.impl("_pin_memory", _pin_memory, "CPU")
    import warnings

    with warnings.catch_warnings():  # "Overriding a previously registered kernel": intended
        warnings.simplefilter("ignore", UserWarning)
        for name in ("empty.memory_format", "empty_strided"):
            lib.impl(name, _backend_select(name), "BackendSelect")
    _LIBS.append(lib)
