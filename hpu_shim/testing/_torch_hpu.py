"""The fake ``torch.hpu`` module, shaped like habana_frameworks' (docs/gaudi-semantics.md).

Deliberate differences from ``torch.cuda`` are kept, because code that runs on the
emulator must also run on Gaudi:
* ``synchronize()`` takes no argument;
* ``Stream(device=None, priority=0)``: both unused, no ``cuda_stream``, no ``priority_range``;
* ``Event(enable_timing=False)`` only: no ``blocking``/``interprocess``, no IPC;
* ``get_device_properties``/``get_device_capability`` return ``str``;
* ``memory_reserved() == Limit``; there is no ``empty_cache``;
* one device per process: ``set_device`` asserts index 0 ("Devices").
Events and streams follow the bridge ("Events and streams"): in lazy mode ``Event.record()`` on the
current stream and any sync/query/switch involving another stream flush the pending graph,
``Stream.synchronize()`` on the current stream waits without flushing, ``Event.synchronize()`` never
flushes; ``query()`` reports work launched since the last synchronization as in flight once.
"""

from __future__ import annotations

import os
import threading
import time
import types

import torch

from . import _counters, _lazy
from ._memory import TRACKER

DEVICE_NAME = "GAUDI2 (emulated)"
_HPU_DEVICE_TYPE = 15  # c10::DeviceType::HPU in stock PyTorch (c10/core/DeviceType.h)
_initialized = False
_tls = threading.local()


def mark_initialized() -> None:
    global _initialized
    _initialized = True


def _index(device=None) -> int:
    """Validate a device argument (None, int, str, torch.device) for the single hpu:0."""
    if device is None or device == -1:
        return 0
    if isinstance(device, int):
        idx = device
    else:
        dev = torch.device(device)
        if dev.type != "hpu":
            raise ValueError(f"Expected an hpu device, got {dev}")
        idx = 0 if dev.index is None else dev.index
    if idx != 0:
        raise AssertionError(
            f"Invalid device index {idx}: HPU is one device per process (docs/gaudi-semantics.md, Devices); "
            "without HABANA_VISIBLE_MODULES/HLS_MODULE_ID the index must be 0 [emulated HPU]"
        )
    return 0


# -- device management ("torch.hpu API") ---------------------------------------------------
def is_available() -> bool:
    return True


def device_count() -> int:
    # --- CORE (issue 9, begin): the node's modules, as the bridge counts them (HABANA_VISIBLE_MODULES, e.g.
    # "0,1" for a TP=2 run); every process still opens only hpu:0 (the device guard, "Devices").
    visible = [m for m in os.environ.get("HABANA_VISIBLE_MODULES", "").split(",") if m.strip()]
    return len(visible) or 1
    # --- CORE (issue 9, end) ---


def init() -> None:
    mark_initialized()


def _lazy_init() -> None:
    mark_initialized()


def is_initialized() -> bool:
    return _initialized


def _is_in_bad_fork() -> bool:
    return False


def current_device() -> int:
    init()
    return 0


def set_device(device) -> None:
    """Asserts the index is 0 (no HABANA_VISIBLE_MODULES / HLS_MODULE_ID emulation)."""
    _index(device)
    init()


def synchronize() -> None:
    """Takes NO argument on HPU (``synchronize(0)`` is a TypeError); flushes, then waits for everything."""
    _counters.bump("synchronize_calls")
    _lazy.implicit_flush()
    _counters.finish()


def get_device_name(device=None) -> str:
    _index(device)
    return DEVICE_NAME


def get_device_properties(device=None) -> str:
    """A ``str`` on Gaudi, not an object with ``.name``/``.total_memory``."""
    _index(device)
    return f"(name='{DEVICE_NAME}', type='gaudi2', total_memory={TRACKER.limit // (1 << 20)}MB)"


def get_device_capability(device=None) -> str:
    """A ``str`` on Gaudi, not a (major, minor) tuple."""
    _index(device)
    return "gaudi2"


def is_bf16_supported() -> bool:
    return True


def can_device_access_peer(device, peer_device) -> bool:
    """Gaudi asserts when both are the same device."""
    if _index(device) == _index(peer_device):
        raise AssertionError("can_device_access_peer: device and peer_device are the same")
    return False


def get_arch_list():
    return [DEVICE_NAME]


def get_gencode_flags() -> str:
    return ""


def utilization(device=None) -> int:
    _index(device)
    return 0


def memory_usage(device=None) -> int:
    _index(device)
    return 0


class device:
    """Context manager selecting the (only) hpu device; other indices assert."""

    def __init__(self, device) -> None:
        self.idx = _index(device)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


class device_of(device):
    def __init__(self, obj) -> None:
        super().__init__(obj.device if obj.device.type == "hpu" else -1)


# -- memory ("torch.hpu API") ------------------------------------------------------------
def memory_stats(device=None) -> dict:
    _index(device)
    return TRACKER.stats()


def mem_get_info(device=None):
    s = memory_stats(device)
    return s["Limit"] - s["InUse"], s["Limit"]


def memory_allocated(device=None) -> int:
    return memory_stats(device)["InUse"]


def max_memory_allocated(device=None) -> int:
    return memory_stats(device)["MaxInUse"]


def memory_reserved(device=None) -> int:
    """Habana returns the whole pool (Limit), not the bytes reserved so far."""
    return memory_stats(device)["Limit"]


def max_memory_reserved(device=None) -> int:
    return memory_stats(device)["Limit"]


def reset_peak_memory_stats(device=None) -> None:
    _index(device)
    TRACKER.reset_peak()


def reset_accumulated_memory_stats(device=None) -> None:
    _index(device)
    TRACKER.reset_accumulated()


def memory_summary(device=None, abbreviated: bool = False) -> str:
    lines = ["HPU memory summary (emulated)"]
    lines += [f"  {k:<18} {v}" for k, v in memory_stats(device).items()]
    return "\n".join(lines)


# -- random (torch.hpu.random, default device "hpu") -------------------------------------
#: torch.hpu's default generator: random ops on hpu draw from it (``_device`` hands it to them).
HPU_GENERATOR = torch.Generator()


def manual_seed(seed: int) -> None:
    HPU_GENERATOR.manual_seed(int(seed))


manual_seed_all = manual_seed


def seed() -> None:
    HPU_GENERATOR.seed()


seed_all = seed


def initial_seed() -> int:
    return HPU_GENERATOR.initial_seed()


def get_rng_state(device="hpu") -> torch.Tensor:
    _index(device)
    return HPU_GENERATOR.get_state()


def set_rng_state(new_state: torch.Tensor, device="hpu") -> None:
    _index(device)
    HPU_GENERATOR.set_state(new_state)


def get_rng_state_all():
    return [get_rng_state()]


def set_rng_state_all(new_states) -> None:
    set_rng_state(new_states[0])


# -- streams and events ("Events and streams") ------------------------------------------------
class Event:
    """``Event(enable_timing=False)`` only; no blocking/interprocess, no IPC (HPUEvent.cpp, events.py)."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.enable_timing = bool(enable_timing)
        self._time: float | None = None
        self._seq: int | None = None  # the launched work this event covers; None: never recorded

    def record(self, stream: Stream | None = None) -> None:
        """Lazy mode: recording on the current stream is a step marker (flushes the pending graph)."""
        stream = current_stream() if stream is None else stream
        if _lazy.is_lazy() and stream == current_stream() and _lazy.implicit_flush():
            _counters.bump("event_record_flushes")
        self._seq = _counters.launched()
        self._time = time.perf_counter()

    def wait(self, stream: Stream | None = None) -> None:
        """Makes the stream's future work wait; nothing for the host to do."""

    def query(self) -> bool:
        """True if never recorded; else False once while the recorded work is in flight."""
        return True if self._seq is None else _counters.observe(self._seq)

    def elapsed_time(self, end_event: Event) -> float:
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self._time is None or end_event._time is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._time - self._time) * 1000.0

    def synchronize(self) -> None:
        """Waits for the recorded work only: it never flushes the pending lazy graph."""
        _counters.bump("event_synchronize_calls")
        if self._seq is not None:
            _counters.finish(self._seq)

    def __repr__(self) -> str:
        return f"<torch.hpu.Event enable_timing={self.enable_timing} (emulated)>"


class Stream:
    """``device`` and ``priority`` are accepted and unused; no ``cuda_stream`` (streams.py)."""

    _next_id = 1
    _id_lock = threading.Lock()

    def __init__(self, device=None, priority: int = 0, *, _stream_id: int | None = None) -> None:
        _index(device)
        if _stream_id is None:
            with Stream._id_lock:
                _stream_id, Stream._next_id = Stream._next_id, Stream._next_id + 1
        self.stream_id = _stream_id
        self.device_index = 0
        self.device_type = _HPU_DEVICE_TYPE

    @property
    def device(self) -> torch.device:
        return torch.device("hpu", 0)

    def wait_event(self, event: Event) -> None:
        pass

    def wait_stream(self, stream: Stream) -> None:
        pass

    def record_event(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event

    def _flush_if_not_current(self) -> None:
        """Lazy mode: touching a stream other than the current one is a step marker (HPUStream.cpp)."""
        if _lazy.is_lazy() and self != current_stream():
            _lazy.implicit_flush()

    def query(self) -> bool:
        """False once while launched work is in flight (the emulator has one in-order queue)."""
        self._flush_if_not_current()
        return _counters.observe(_counters.launched())

    def synchronize(self) -> None:
        """Waits for launched work; on the current stream it does not flush the pending graph."""
        _counters.bump("stream_synchronize_calls")
        self._flush_if_not_current()
        _counters.finish()

    def __eq__(self, other) -> bool:
        return isinstance(other, Stream) and other.stream_id == self.stream_id

    def __hash__(self) -> int:
        return hash(("hpu", self.stream_id))

    def __repr__(self) -> str:
        return f"<torch.hpu.Stream device=hpu:0 stream_id={self.stream_id} (emulated)>"


_DEFAULT_STREAM = Stream(_stream_id=0)  # the default stream has id 0


def default_stream(device=None) -> Stream:
    _index(device)
    return _DEFAULT_STREAM


def current_stream(device=None) -> Stream:
    _index(device)
    return getattr(_tls, "stream", _DEFAULT_STREAM)


def set_stream(stream: Stream | None) -> None:
    """No-op on None; lazy mode: switching to another stream is a step marker (setCurrentHPUStream)."""
    if stream is None:
        return
    if stream != current_stream() and _lazy.is_lazy():
        _lazy.implicit_flush()
    _tls.stream = stream


class StreamContext:
    def __init__(self, stream: Stream | None) -> None:
        self.stream = stream
        self._prev: Stream | None = None

    def __enter__(self):
        self._prev = current_stream()
        set_stream(self.stream)
        return self.stream

    def __exit__(self, *exc) -> bool:
        set_stream(self._prev)
        return False


def stream(stream: Stream | None) -> StreamContext:
    return StreamContext(stream)


def record_stream(tensor: torch.Tensor, stream: Stream) -> None:
    """Exists in torch.hpu; allocation is host-synchronous here, so nothing to track."""


_PUBLIC = (
    "is_available", "device_count", "init", "_lazy_init", "is_initialized", "_is_in_bad_fork",
    "current_device", "set_device", "synchronize", "get_device_name", "get_device_properties",
    "get_device_capability", "is_bf16_supported", "can_device_access_peer", "get_arch_list",
    "get_gencode_flags", "utilization", "memory_usage", "device", "device_of",
    "memory_stats", "mem_get_info", "memory_allocated", "max_memory_allocated",
    "memory_reserved", "max_memory_reserved", "reset_peak_memory_stats",
    "reset_accumulated_memory_stats", "memory_summary",
    "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed", "get_rng_state",
    "set_rng_state", "get_rng_state_all", "set_rng_state_all",
    "Event", "Stream", "StreamContext", "default_stream", "current_stream", "set_stream",
    "stream", "record_stream",
)


def build_module() -> types.ModuleType:
    """A fresh ``torch.hpu`` module object exposing exactly the emulated API."""
    mod = types.ModuleType("torch.hpu", "Emulated torch.hpu (hpu_shim.testing); see docs/gaudi-semantics.md.")
    g = globals()
    for name in _PUBLIC:
        setattr(mod, name, g[name])
    mod.__all__ = [n for n in _PUBLIC if not n.startswith("_")]
    mod.__hpu_shim_emulated__ = True
    return mod
