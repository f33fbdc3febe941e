"""The redirect table: every ``torch.cuda.*`` API the shim knows, and where it goes.

One row per API, classed as in Habana's GPU Migration Toolkit; the HPU side follows
``docs/gaudi-semantics.md`` ("torch.hpu API"):

* ``match``    -- same meaning on the backend, same arguments;
* ``modified`` -- same intent, but arguments or results are adapted (``synchronize(device)``
  loses its device; ``get_device_properties`` gets an object);
* ``mismatch`` -- no real equivalent; a documented stand-in (no-op, ``None``, fake value).

``op`` names the backend method that implements the row (see ``hpu_shim.backends``). A name
that is not in this table is *unknown*: in scope it warns once per call site and falls through
to the real ``torch.cuda``, or raises ``UnsupportedCudaAPI`` under ``HPU_SHIM_STRICT=1``.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

__all__ = ["Redirect", "REDIRECTS", "MATCH", "MODIFIED", "MISMATCH", "lookup"]

MATCH, MODIFIED, MISMATCH = "match", "modified", "mismatch"


@dataclasses.dataclass(frozen=True)
class Redirect:
    category: str
    op: str
    note: str = ""
    #: "function": a callable; "class": a type (isinstance and class attributes keep working);
    #: "namespace": a sub-namespace such as ``torch.cuda.nvtx``.
    kind: str = "function"


def _m(op: str, note: str = "", kind: str = "function") -> Redirect:
    return Redirect(MATCH, op, note, kind)


def _mod(op: str, note: str, kind: str = "function") -> Redirect:
    return Redirect(MODIFIED, op, note, kind)


def _mis(op: str, note: str, kind: str = "function") -> Redirect:
    return Redirect(MISMATCH, op, note, kind)


_TABLE: dict[str, Redirect] = {
    # --- device management ("torch.hpu API"; one device per process: docs/architecture.md "Devices") ---
    "is_available": _m("is_available"),
    "is_initialized": _m("is_initialized"),
    "init": _m("init"),
    "device_count": _m("device_count"),
    "current_device": _m("current_device"),
    "set_device": _mod("set_device", "one device per process on HPU: a valid ordinal (e.g. the local rank) is "
                                     "accepted and the process keeps its HPU, as vllm-gaudi's set_device does"),
    "synchronize": _mod("synchronize", "device argument dropped; on HPU mark_step() then torch.hpu.synchronize()"),
    "get_device_name": _m("get_device_name"),
    "get_device_properties": _mod(
        "get_device_properties", "torch.hpu returns a str; an object with .name and .total_memory is built"
    ),
    "get_device_capability": _mis("get_device_capability", "no CUDA compute capability on HPU: (0, 0)"),
    "is_bf16_supported": _m("is_bf16_supported"),
    "can_device_access_peer": _mis("can_device_access_peer", "one device per process: False"),
    "get_arch_list": _mis("get_arch_list", "no CUDA architectures: []"),
    "device": _m("device", kind="class"),
    "device_of": _m("device_of", kind="class"),
    # --- streams and events ("torch.hpu API", "Events and streams") ---
    "Stream": _mod("Stream", "device and priority ignored (one device, low priority only)", kind="class"),
    "Event": _mod("Event", "only enable_timing; blocking ignored; interprocess unsupported (no IPC)", kind="class"),
    "current_stream": _mod("current_stream", "device argument dropped"),
    "default_stream": _mod("default_stream", "device argument dropped"),
    "set_stream": _m("set_stream"),
    "stream": _m("stream"),
    "StreamContext": _m("StreamContext", kind="class"),
    "is_current_stream_capturing": _mis("is_current_stream_capturing", "no CUDA graph capture: False"),
    # --- memory ("torch.hpu API") ---
    "mem_get_info": _mod("mem_get_info", "device argument dropped"),
    "memory_allocated": _mod("memory_allocated", "device argument dropped"),
    "max_memory_allocated": _mod("max_memory_allocated", "device argument dropped"),
    "memory_reserved": _mod("memory_reserved", "torch.hpu reports the allocator Limit"),
    "max_memory_reserved": _mod("max_memory_reserved", "torch.hpu reports the allocator Limit"),
    "memory_stats": _mod("memory_stats", "HPU keys (Limit, InUse, MaxInUse, ...)"),
    "reset_peak_memory_stats": _mod("reset_peak_memory_stats", "device argument dropped"),
    "memory_summary": _mod("memory_summary", "device argument dropped"),
    "empty_cache": _mis("empty_cache", "no-op: no need to call empty_cache on HPU"),
    "ipc_collect": _mis("ipc_collect", "no-op: no CUDA IPC on HPU"),
    # --- RNG ---
    "manual_seed": _m("manual_seed"),
    "manual_seed_all": _m("manual_seed_all"),
    "seed": _m("seed"),
    "seed_all": _m("seed_all"),
    "initial_seed": _m("initial_seed"),
    "get_rng_state": _mod("get_rng_state", "device argument dropped"),
    "set_rng_state": _mod("set_rng_state", "device argument dropped"),
    # --- runtime handles with no HPU equivalent ---
    "cudart": _mis("cudart", "returns None: no CUDA runtime (cudaHostRegister is impossible)"),
    "nvtx": _mis("nvtx", "NVTX ranges are no-ops", kind="namespace"),
    "nvtx.range_push": _mis("nvtx_noop", "no-op"),
    "nvtx.range_pop": _mis("nvtx_noop", "no-op"),
    "nvtx.mark": _mis("nvtx_noop", "no-op"),
    "nvtx.range_start": _mis("nvtx_noop", "no-op"),
    "nvtx.range_end": _mis("nvtx_noop", "no-op"),
    "nvtx.range": _mis("nvtx_range", "null context manager / decorator"),
}

#: Read-only view of the table; the compatibility layer overlays per-release rows, never edits it.
REDIRECTS: Mapping[str, Redirect] = MappingProxyType(_TABLE)


def lookup(name: str, overlay: Mapping[str, Redirect] | None = None) -> Redirect | None:
    if overlay and name in overlay:
        return overlay[name]
    return REDIRECTS.get(name)
