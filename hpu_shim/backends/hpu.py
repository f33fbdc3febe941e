"""The HPU backend: ``torch.cuda`` semantics expressed with ``torch.hpu`` and ``mark_step``.

Differences honoured (``docs/gaudi-semantics.md``, "torch.hpu API" and "Execution modes"):
``torch.hpu.synchronize()`` takes no device; in lazy mode pending ops only run after ``mark_step()``,
so a CUDA ``synchronize()`` is ``mark_step()`` followed by ``torch.hpu.synchronize()``; ``Stream``
ignores device and priority; ``Event`` takes only ``enable_timing``; ``get_device_properties``
returns a str on HPU, so an object is built; there is no ``empty_cache``. One HPU per process
(``docs/architecture.md``, "Devices"): every CUDA ordinal is the process's HPU and ``set_device``
keeps it. ``pin_memory=True`` is kept where the bridge has a pinned host allocator (builds for
PyTorch >= 2.5) and dropped, with one log line per site, where it has none ("Pinned memory and copies").
"""

from __future__ import annotations

import functools
from typing import Any

from ..core.devices import DeviceTarget
from .base import Backend, DeviceProperties, warn_once

__all__ = ["HpuBackend", "probe_hpu", "mark_step"]


def probe_hpu() -> tuple[bool, str]:
    """(available, why not). Imports habana_frameworks only when torch did not autoload it."""
    try:
        import torch
    except ImportError:
        return False, "torch is not importable"
    if getattr(torch, "hpu", None) is None:
        try:
            import habana_frameworks.torch  # noqa: F401  (pre-1.18: registers torch.hpu)
        except ImportError:
            return False, "torch.hpu does not exist and habana_frameworks is not installed"
    hpu = getattr(torch, "hpu", None)
    if hpu is None:
        return False, "torch.hpu does not exist"
    try:
        if hpu.is_available():
            return True, ""
    except Exception as exc:  # a broken driver must not crash the probe
        return False, f"torch.hpu.is_available() raised {exc!r}"
    return False, "torch.hpu.is_available() returned False"


@functools.lru_cache(maxsize=1)
def _mark_step():
    from habana_frameworks.torch.core import mark_step as fn

    return fn


def mark_step() -> None:
    _mark_step()()


def _hpu():
    import torch

    return torch.hpu


class HpuBackend(Backend):
    name = "hpu"
    module_name = "torch.hpu"
    #: every CUDA ordinal is this process's HPU (one device per process; docs/architecture.md "Devices")
    target = DeviceTarget("hpu", current=lambda: _hpu().current_device())
    @functools.cached_property
    def can_pin(self) -> bool:  # type: ignore[override]
        """Whether this bridge build pins host memory (builds for PyTorch >= 2.5 do; 1.18 has no pinned
        allocator): ``docs/gaudi-semantics.md``, "Pinned memory and copies". Asked once, by trying."""
        import torch

        try:
            return bool(torch.empty(1, pin_memory=True).is_pinned())
        except (RuntimeError, NotImplementedError):
            return False
    descriptions = {
        "synchronize": "habana_frameworks.torch.core.mark_step(); torch.hpu.synchronize()",
        "set_device": "no-op: the process keeps its HPU (one device per process)",
        "get_device_properties": "DeviceProperties(torch.hpu.get_device_name(), memory_stats()['Limit'])",
        "Event": "torch.hpu.Event(enable_timing=...)",
        "Stream": "torch.hpu.Stream()",
        "empty_cache": "no-op",
        "ipc_collect": "no-op",
        "cudart": "None",
        "cudart_without_pinning": "cudart stand-in: cudaHostRegister skipped (no pinned memory on HPU)",
        "nvtx_noop": "no-op",
        "nvtx_range": "contextlib.nullcontext()",
        "get_device_capability": "(0, 0)",
        "can_device_access_peer": "False",
        "get_arch_list": "[]",
        "is_current_stream_capturing": "False",
    }

    # device management
    def is_available(self) -> bool:
        return _hpu().is_available()

    def is_initialized(self) -> bool:
        return _hpu().is_initialized()

    def init(self) -> None:
        _hpu().init()

    def device_count(self) -> int:
        return _hpu().device_count()

    def current_device(self) -> int:
        return _hpu().current_device()

    def set_device(self, device: Any) -> None:
        """A valid ordinal (``rank % device_count()``) is accepted and the process keeps its HPU.

        On Gaudi each process opens one module and the bridge's guard wants it active; vllm-gaudi's
        ``HpuPlatform.set_device`` is a no-op for the same reason. Calling ``torch.hpu.set_device(N)``
        would rewrite ``HLS_MODULE_ID`` after the device is open, or assert N == 0.
        """
        self.check_ordinal(device)

    def synchronize(self, device: Any = None) -> None:
        mark_step()
        _hpu().synchronize()

    def get_device_name(self, device: Any = None) -> str:
        return _hpu().get_device_name()

    def get_device_properties(self, device: Any = None) -> DeviceProperties:
        hpu = _hpu()
        return DeviceProperties(
            name=hpu.get_device_name(), total_memory=int(hpu.memory_stats()["Limit"]), type="hpu"
        )

    def is_bf16_supported(self, *args: Any, **kwargs: Any) -> bool:
        return _hpu().is_bf16_supported()

    def device(self, device: Any):
        self.check_ordinal(device)
        return _hpu().device(self.target.current())

    def device_of(self, obj: Any):
        return _hpu().device_of(obj)

    # streams and events
    def Stream(self, device: Any = None, priority: int = 0, **kwargs: Any):
        return _hpu().Stream()

    def Event(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        if interprocess:
            warn_once("hpu_shim: torch.cuda.Event(interprocess=True) on HPU: IPC events do not exist (docs/gaudi-semantics.md, 'torch.hpu API'); "
                      "a local event is returned and ipc_handle() will fail")
        return _hpu().Event(enable_timing=enable_timing)

    def current_stream(self, device: Any = None):
        return _hpu().current_stream()

    def default_stream(self, device: Any = None):
        return _hpu().default_stream()

    def set_stream(self, stream: Any) -> None:
        _hpu().set_stream(stream)

    def stream(self, stream: Any):
        return _hpu().stream(stream)

    def StreamContext(self, stream: Any):
        return _hpu().StreamContext(stream)

    def instance_type(self, op: str) -> type:
        return {"Stream": _hpu().Stream, "Event": _hpu().Event, "StreamContext": _hpu().StreamContext,
                "device": _hpu().device, "device_of": _hpu().device_of}[op]

    class_attrs = {"Stream": {"priority_range": staticmethod(lambda: (0, 0))}}

    # memory
    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return _hpu().mem_get_info()

    def memory_allocated(self, device: Any = None) -> int:
        return _hpu().memory_allocated()

    def max_memory_allocated(self, device: Any = None) -> int:
        return _hpu().max_memory_allocated()

    def memory_reserved(self, device: Any = None) -> int:
        return _hpu().memory_reserved()

    def max_memory_reserved(self, device: Any = None) -> int:
        return _hpu().max_memory_reserved()

    def memory_stats(self, device: Any = None) -> dict:
        return _hpu().memory_stats()

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        _hpu().reset_peak_memory_stats()

    def memory_summary(self, device: Any = None, abbreviated: bool = False) -> str:
        return _hpu().memory_summary()

    # RNG
    def manual_seed(self, seed: int) -> None:
        _hpu().manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        _hpu().manual_seed_all(seed)

    def seed(self) -> None:
        _hpu().seed()

    def seed_all(self) -> None:
        _hpu().seed_all() if hasattr(_hpu(), "seed_all") else _hpu().seed()

    def initial_seed(self) -> int:
        return _hpu().initial_seed()

    def get_rng_state(self, device: Any = "cuda"):
        return _hpu().get_rng_state()

    def set_rng_state(self, new_state: Any, device: Any = "cuda") -> None:
        _hpu().set_rng_state(new_state)

    def mark_step(self) -> None:
        mark_step()
