"""The backend contract shared by the HPU and CPU backends: the op names of ``hpu_shim.redirects``
that are the same everywhere, the device target CUDA devices map to, and ordinal checking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any

from ..core.devices import DeviceTarget

log = logging.getLogger("hpu_shim")

__all__ = ["Backend", "BackendUnavailable", "DeviceProperties"]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. HPU_SHIM_BACKEND=hpu on a host without an HPU)."""


@dataclasses.dataclass(frozen=True)
class DeviceProperties:
    """What CUDA code reads from ``get_device_properties``: torch.hpu only returns a str (docs/gaudi-semantics.md "torch.hpu API")."""

    name: str
    total_memory: int
    type: str
    major: int = 0
    minor: int = 0
    multi_processor_count: int = 1


class Backend:
    """Implements the redirect table's ``op`` names; subclasses bind them to a device module."""

    name: str = "?"
    #: the module path shown in audit lines, e.g. "torch.hpu"
    module_name: str = "?"
    target: DeviceTarget
    #: whether ``pin_memory=True`` can be honoured; if not it is dropped in scope
    can_pin: bool = False
    #: how ops are described in the audit when not simply "<module_name>.<op>(...)"
    descriptions: dict[str, str] = {}

    def describe(self, op: str) -> str:
        return self.descriptions.get(op, f"{self.module_name}.{op}(...)")

    @property
    def device_spec(self) -> str:
        """The device CUDA's default device becomes, e.g. 'hpu:0' or 'cpu'."""
        return self.target.spec(0)

    # ---- ops shared by every backend -----------------------------------------------------
    def get_device_capability(self, device: Any = None) -> tuple[int, int]:
        return (0, 0)

    def can_device_access_peer(self, device: Any, peer: Any) -> bool:
        return False

    def get_arch_list(self) -> list[str]:
        return []

    def is_current_stream_capturing(self) -> bool:
        return False

    def cuda_unavailable(self) -> bool:
        """For releases with native HPU support: their CUDA-only paths must stay off."""
        return False

    def empty_cache(self) -> None:
        return None

    def ipc_collect(self) -> None:
        return None

    def cudart(self) -> None:
        return None

    def cudart_without_pinning(self) -> "_NoPinCudart":
        return _NO_PIN_CUDART

    def nvtx_noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def nvtx_range(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager:
        return _NullRange()

    def check_ordinal(self, device: Any) -> int:
        """A CUDA-style device argument naming one of this node's devices; a clear error otherwise."""
        index = self.index_of(device)
        count = self.device_count()
        if not 0 <= index < max(count, 1):
            raise ValueError(f"hpu_shim: device {device!r} is not one of this node's {count} {self.name} device(s) "
                             f"(valid ordinals: 0..{max(count, 1) - 1}); CUDA ordinals name the process's own "
                             f"{self.name} device")
        return index

    def index_of(self, device: Any) -> int:
        """The ordinal a CUDA-style device argument names (None/'cuda' -> current)."""
        import torch

        if device is None:
            return self.current_device()
        if isinstance(device, int):
            return device
        if isinstance(device, str):
            device = torch.device(device)
        if isinstance(device, torch.device):
            if device.type not in ("cuda", self.target.type):
                raise ValueError(f"invalid device argument {device!r}: expected a cuda or {self.target.type} device")
            return device.index if device.index is not None else self.current_device()
        raise TypeError(f"invalid device argument {device!r}: expected int, str or torch.device")


class _NoPinCudart:
    """What 0.3.1 - 0.3.3 need from ``cudart()``: their host allocator pins with ``cudaHostRegister``.
    The HPU backend does not pin host memory (``HpuBackend.can_pin``), so registration is skipped
    (success, unpinned)."""

    def cudaHostRegister(self, ptr: int, size: int, flags: int = 0) -> int:
        warn_once("hpu_shim: cudaHostRegister skipped: host buffers stay unpinned on HPU (the Habana "
                  "allocator cannot pin host memory)")
        return 0

    def cudaHostUnregister(self, ptr: int) -> int:
        return 0

    def cudaGetErrorString(self, err: int) -> str:
        return f"hpu_shim: no CUDA runtime (error {err})"


_NO_PIN_CUDART = _NoPinCudart()


class _NullRange(contextlib.ContextDecorator):
    """``torch.cuda.nvtx.range`` works as both a context manager and a decorator."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@functools.lru_cache(maxsize=None)
def warn_once(message: str) -> None:
    log.warning(message)
