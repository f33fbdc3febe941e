"""Torch-native stand-in for ``lmcache.c_ops`` (and ``lmcache.cuda_ops``) inside the scope.

The real libraries are CUDA-compiled (NEEDED ``libcudart.so``): they can never load on a Gaudi,
and LMCache imports them whenever ``torch.cuda.is_available()`` is True. The stand-in provides:

* host buffer allocation (``alloc_pinned_ptr`` and friends), kept alive in a registry until
  LMCache's own free call (``free_pinned_ptr`` ...) releases them -- nothing else ever frees them,
  not even ``hpu_shim.uninstall()``: LMCache keeps using the addresses. They are really pinned
  where the device's allocator can pin (bridge >= 1.19 on PyTorch >= 2.5, probed once by
  ``hpu_shim.transfer``; ``docs/gaudi-semantics.md``), ordinary host memory otherwise. A buffer
  counts as pinned at its allocation's first byte, which is the address LMCache gets;
* the vLLM-path transfer kernels ``multi_layer_kv_transfer`` and ``single_layer_kv_transfer`` for
  *tensors*, through ``hpu_shim.transfer`` (validated before any write, one device sync). The CUDA
  signatures take an array of raw device pointers; a pointer array is refused with a clear error,
  because dereferencing a device pointer from the host is exactly what cannot work on HPU (the
  shim's connector passes tensors instead);
* the enums some releases read (``TransferDirection``, ``GPUKVFormat``);
* for every other kernel (CacheGen, blending, SGLang), a clear ``NotImplementedError`` on call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = [
    "alloc_pinned_ptr",
    "build",
    "free_pinned_ptr",
    "live_buffers",
    "multi_layer_kv_transfer",
    "single_layer_kv_transfer",
]

log = logging.getLogger("hpu_shim")
_lock = threading.Lock()
_buffers: dict[int, Any] = {}


def _can_pin() -> bool:
    """Whether host buffers can be pinned for the HPU here (never on a host without one)."""
    import torch

    hpu = getattr(torch, "hpu", None)
    try:
        if hpu is None or not hpu.is_available():
            return False
    except Exception:  # noqa: BLE001  (a broken driver: no pinning, the buffer still works)
        return False
    from ..transfer.device import pinning_supported

    return pinning_supported("hpu")


def _alloc(size: int) -> int:
    import torch

    size = int(size)
    if size <= 0:
        raise ValueError(f"hpu_shim's lmcache.c_ops: cannot allocate a host buffer of {size} bytes (size must be > 0)")
    buf = torch.empty(size, dtype=torch.uint8, pin_memory=_can_pin())
    buf.zero_()  # first touch now, not on the first transfer
    ptr = buf.data_ptr()
    with _lock:
        _buffers[ptr] = buf
    return ptr


def _free(ptr: int, *args: Any) -> None:
    with _lock:
        buf = _buffers.pop(int(ptr), None)
    if buf is None:
        log.warning("hpu_shim's lmcache.c_ops: free of %#x, which no alloc_*_ptr call returned (or it was freed "
                    "already); nothing was freed", int(ptr))


def live_buffers() -> int:
    """Host buffers allocated through the stand-in and not yet freed by LMCache."""
    with _lock:
        return len(_buffers)


def alloc_pinned_ptr(size: int, device_id: int = 0) -> int:
    """A host buffer for LMCache's CPU backend; returns its address like ``cudaHostAlloc``."""
    return _alloc(size)


def alloc_pinned_numa_ptr(size: int, numa_id: int = 0) -> int:
    return _alloc(size)


alloc_numa_ptr = alloc_pinned_numa_ptr
free_pinned_ptr = free_pinned_numa_ptr = free_numa_ptr = _free


def _tensors(kv: Any, what: str) -> list:
    import torch

    if isinstance(kv, torch.Tensor) and kv.dtype == torch.int64 and kv.dim() == 1:
        raise RuntimeError(
            f"hpu_shim's lmcache.c_ops.{what} got an array of raw device pointers: a device pointer cannot be "
            f"dereferenced from the host on HPU. Pass the per-layer KV tensors instead (hpu_shim's HPU connector "
            f"does); LMCache's CUDA connector is replaced by it inside the shim's scope."
        )
    return kv if isinstance(kv, torch.Tensor) else list(kv)


def _to_paged(direction: Any) -> bool:
    """``direction``: True or ``TransferDirection.D2H`` = paged cache -> buffer; False or ``H2D`` = the reverse."""
    if isinstance(direction, bool):
        return not direction
    name = getattr(direction, "name", str(direction))
    if name not in ("H2D", "D2H"):
        raise ValueError(f"hpu_shim's lmcache.c_ops: unknown transfer direction {direction!r}; expected True/False "
                         f"or TransferDirection.D2H/H2D")
    return name == "H2D"


def _move(cache: Any, buffer: Any, slot_mapping: Any, to_paged: bool) -> None:
    """``buffer[kv, L, :n]`` <-> the paged ``cache`` at ``slot_mapping[:n]``, validated before any write."""
    from .. import transfer

    n = int(slot_mapping.shape[0]) if hasattr(slot_mapping, "shape") and slot_mapping.dim() else 0
    on_host = buffer.device.type == "cpu"
    host = buffer if on_host else buffer.to("cpu")  # a device-resident buffer (0.3.x gpu_buffer) goes via the host
    if to_paged:
        transfer.retrieve(cache, [host], slot_mapping, [0], [n])
    else:
        transfer.store(cache, slot_mapping, [0], [n], [host])
        if not on_host:
            buffer[:, :, :n].copy_(host[:, :, :n])


def multi_layer_kv_transfer(key_value: Any, kv_layers: Any, slot_mapping: Any, device: Any = None,
                            page_buffer_size: int = 0, direction: Any = True, use_mla: Any = False,
                            block_size: Any = None, *_: Any) -> None:
    """``key_value[kv, l, t] <-> layer[l][kv, slot_mapping[t]]``; direction True/D2H = paged -> key_value.

    ``kv_layers`` is a list of per-layer paged KV tensors in any layout ``hpu_shim.transfer`` knows.
    0.3.x pass ``use_mla`` as a bool; 0.4.x pass a ``GPUKVFormat`` there (and a block size after it).
    """
    from .. import transfer

    layers = _tensors(kv_layers, "multi_layer_kv_transfer")
    mla = use_mla if isinstance(use_mla, bool) else (hasattr(layers[0], "dim") and layers[0].dim() <= 3)
    cache = transfer.kv_cache(layers, use_mla=mla, block_size=block_size if isinstance(block_size, int) else None)
    _move(cache, key_value, slot_mapping, _to_paged(direction))


def single_layer_kv_transfer(lmc_kv: Any, vllm_kv_layer: Any, slot_mapping: Any, direction: Any = True,
                             token_major: bool = False, vllm_two_major: bool = True, *_: Any) -> None:
    """One layer: ``lmc_kv`` is ``[2, T, hidden]`` (or ``[T, 2, hidden]`` when token_major)."""
    from .. import transfer

    layer = _tensors([vllm_kv_layer] if not isinstance(vllm_kv_layer, list) else vllm_kv_layer,
                     "single_layer_kv_transfer")
    cache = transfer.kv_cache(layer)
    buffer = (lmc_kv.transpose(0, 1) if token_major else lmc_kv).unsqueeze(1)  # [kv, 1, T, hidden], a view
    _move(cache, buffer, slot_mapping, _to_paged(direction))


class _Enum:
    """Enum namespaces read by some releases; members are named sentinels created on first use."""

    def __init__(self, name: str, *members: str) -> None:
        self._name = name
        for m in members:
            setattr(self, m, _Member(name, m))

    def __getattr__(self, member: str) -> _Member:
        if member.startswith("__"):
            raise AttributeError(member)
        value = _Member(self._name, member)
        setattr(self, member, value)
        return value


class _Member:
    def __init__(self, enum: str, name: str) -> None:
        self.enum, self.name = enum, name

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name} (hpu_shim)>"


def _unsupported(name: str):
    def kernel(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"lmcache.c_ops.{name} is a CUDA kernel with no HPU stand-in in hpu_shim (used by CacheGen serde, "
            f"blending or SGLang paths). On HPU use remote_serde: naive, enable_blending: false, and vLLM."
        )

    kernel.__name__ = name
    return kernel


_UNSUPPORTED = ("multi_layer_kv_transfer_unilateral", "single_layer_kv_transfer_sgl", "multi_layer_block_kv_transfer",
                "lmcache_memcpy_async", "rotary_embedding_k_fused", "encode_fast_new", "calculate_cdf",
                "decode_fast_prefsum", "load_and_reshape_flash", "reshape_and_cache_back_flash",
                "alloc_shm_pinned_ptr", "free_shm_pinned_ptr")


def get_gpu_pci_bus_id(device: Any = 0) -> str:
    raise RuntimeError("lmcache.c_ops.get_gpu_pci_bus_id: NUMA auto-detection reads a CUDA PCI bus id, which an HPU "
                       "does not have; configure numa_mode explicitly or leave it off on HPU.")


def _missing(name: str) -> Any:
    raise AttributeError(f"lmcache.c_ops has no {name!r} in hpu_shim's torch-native stand-in (the CUDA library "
                         f"cannot load on HPU); please report which LMCache path needs it")


def build(module: Any) -> None:
    """Fill a fresh module object (the finder's stand-in for ``lmcache.c_ops``)."""
    g = globals()
    for name in ("alloc_pinned_ptr", "alloc_pinned_numa_ptr", "alloc_numa_ptr", "free_pinned_ptr",
                 "free_pinned_numa_ptr", "free_numa_ptr", "multi_layer_kv_transfer", "single_layer_kv_transfer",
                 "get_gpu_pci_bus_id"):
        setattr(module, name, g[name])
    for name in _UNSUPPORTED:
        setattr(module, name, _unsupported(name))
    module.TransferDirection = _Enum("TransferDirection", "H2D", "D2H")
    module.GPUKVFormat = _Enum("GPUKVFormat")
    module.__hpu_shim_stand_in__ = "hpu_shim.compat.c_ops (torch-native stand-in)"
    module.__getattr__ = _missing
    module.__doc__ = __doc__
