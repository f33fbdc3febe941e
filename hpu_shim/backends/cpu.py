"""The CPU backend: CUDA redirected to the host, for CPU hosts and vLLM's CPU build.

Host work is synchronous, so streams and events are ordering no-ops with the CUDA-shaped API
(``torch.cpu.Stream`` has no ``synchronize``/``query`` of its own). ``current_device`` is ``0``
rather than ``torch.cpu.current_device()``'s ``"cpu"``, because CUDA code builds
``f"cuda:{current_device()}"`` strings.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from typing import Any

from ..core.devices import DeviceTarget
from .base import Backend, DeviceProperties

__all__ = ["CpuBackend", "HostStream", "HostEvent"]


def _host_memory() -> tuple[int, int]:
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


class HostStream:
    """A CUDA-shaped stream for synchronous host execution."""

    device_type = "cpu"
    device_index = 0

    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any):
        self.priority = 0

    @staticmethod
    def priority_range() -> tuple[int, int]:
        return (0, 0)

    def wait_stream(self, stream: Any) -> None: ...
    def wait_event(self, event: Any) -> None: ...
    def synchronize(self) -> None: ...

    def record_event(self, event: Any = None) -> "HostEvent":
        event = event or HostEvent()
        event.record(self)
        return event

    def query(self) -> bool:
        return True


class HostEvent:
    """A CUDA-shaped event; ``elapsed_time`` is wall-clock milliseconds between records."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing
        self._t: float | None = None

    def record(self, stream: Any = None) -> None:
        self._t = time.perf_counter()

    def wait(self, stream: Any = None) -> None: ...
    def synchronize(self) -> None: ...

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: "HostEvent") -> float:
        if not (self.enable_timing and end.enable_timing) or self._t is None or end._t is None:
            raise RuntimeError("elapsed_time needs two recorded events created with enable_timing=True")
        return (end._t - self._t) * 1000.0


_tls = threading.local()
_DEFAULT = HostStream()


class CpuBackend(Backend):
    name = "cpu"
    module_name = "torch.cpu"
    target = DeviceTarget("cpu")  # no index: every CUDA ordinal is the host
    can_pin = False  # pinning needs an accelerator; CPU torch raises on pin_memory=True
    descriptions = {
        "synchronize": "torch.cpu.synchronize()",
        "Stream": "hpu_shim HostStream()",
        "Event": "hpu_shim HostEvent()",
        "get_device_properties": "DeviceProperties(host CPU)",
        "empty_cache": "no-op",
        "ipc_collect": "no-op",
        "cudart": "None",
        "cudart_without_pinning": "cudart stand-in: cudaHostRegister skipped (host memory is not pinned)",
        "nvtx_noop": "no-op",
        "nvtx_range": "contextlib.nullcontext()",
        "get_device_capability": "(0, 0)",
        "can_device_access_peer": "False",
        "get_arch_list": "[]",
        "is_current_stream_capturing": "False",
        "mem_get_info": "host (available, total) memory",
    }

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def init(self) -> None: ...

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def set_device(self, device: Any) -> None:
        self.index_of(device)  # validates the argument; the host has one device

    def synchronize(self, device: Any = None) -> None:
        import torch

        torch.cpu.synchronize()

    def get_device_name(self, device: Any = None) -> str:
        return platform.processor() or platform.machine() or "cpu"

    def get_device_properties(self, device: Any = None) -> DeviceProperties:
        return DeviceProperties(name=self.get_device_name(), total_memory=_host_memory()[1], type="cpu")

    def is_bf16_supported(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def device(self, device: Any):
        return contextlib.nullcontext()

    def device_of(self, obj: Any):
        return contextlib.nullcontext()

    def Stream(self, device: Any = None, priority: int = 0, **kwargs: Any) -> HostStream:
        return HostStream()

    def Event(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> HostEvent:
        return HostEvent(enable_timing=enable_timing)

    def current_stream(self, device: Any = None) -> HostStream:
        return getattr(_tls, "stream", None) or _DEFAULT

    def default_stream(self, device: Any = None) -> HostStream:
        return _DEFAULT

    def set_stream(self, stream: Any) -> None:
        if stream is not None:
            _tls.stream = stream

    @contextlib.contextmanager
    def stream(self, stream: Any):
        previous = getattr(_tls, "stream", None)
        if stream is not None:
            _tls.stream = stream
        try:
            yield stream
        finally:
            _tls.stream = previous

    def StreamContext(self, stream: Any):
        return self.stream(stream)

    def instance_type(self, op: str) -> type:
        return {"Stream": HostStream, "Event": HostEvent}.get(op, object)

    class_attrs: dict = {}

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return _host_memory()

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    max_memory_allocated = memory_allocated

    def memory_reserved(self, device: Any = None) -> int:
        return 0

    max_memory_reserved = memory_reserved

    def memory_stats(self, device: Any = None) -> dict:
        free, total = _host_memory()
        return {"Limit": total, "InUse": total - free}

    def reset_peak_memory_stats(self, device: Any = None) -> None: ...

    def memory_summary(self, device: Any = None, abbreviated: bool = False) -> str:
        free, total = _host_memory()
        return f"host memory: {free} free of {total} bytes"

    def manual_seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def seed(self) -> None:
        import torch

        torch.seed()

    seed_all = seed

    def initial_seed(self) -> int:
        import torch

        return torch.initial_seed()

    def get_rng_state(self, device: Any = "cuda"):
        import torch

        return torch.get_rng_state()

    def set_rng_state(self, new_state: Any, device: Any = "cuda") -> None:
        import torch

        torch.set_rng_state(new_state)

    def mark_step(self) -> None: ...
