"""Torch-native stand-in for ``lmcache.c_ops`` (and ``lmcache.cuda_ops``) inside the scope.

The real libraries are CUDA-compiled (NEEDED ``libcudart.so``): they can never load on a Gaudi,
and LMCache imports them whenever ``torch.cuda.is_available()`` is True. The stand-in provides:

* host buffer allocation (``alloc_pinned_ptr`` and friends). HPU cannot pin host memory
  (``hpu_ecosystem.md`` A5), so these are ordinary host allocations kept alive in a registry,
  as LMCache's own ``non_cuda_equivalents`` does;
* the vLLM-path transfer kernels ``multi_layer_kv_transfer`` and ``single_layer_kv_transfer`` for
  *tensors* (``index_select``/``index_copy_`` on the device). The CUDA signatures take an array of
  raw device pointers; a pointer array is refused with a clear error, because dereferencing a
  device pointer from the host is exactly what cannot work on HPU (the shim's connector passes
  tensors instead);
* the enums some releases read (``TransferDirection``, ``GPUKVFormat``);
* for every other kernel (CacheGen, blending, SGLang), a clear ``NotImplementedError`` on call.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["build", "alloc_pinned_ptr", "free_pinned_ptr", "multi_layer_kv_transfer", "single_layer_kv_transfer"]

_lock = threading.Lock()
_buffers: dict[int, Any] = {}


def _alloc(size: int) -> int:
    import torch

    buf = torch.zeros(int(size), dtype=torch.uint8)  # first touch, like cudaHostAlloc's zeroed pages
    ptr = buf.data_ptr()
    with _lock:
        _buffers[ptr] = buf
    return ptr


def _free(ptr: int, *args: Any) -> None:
    with _lock:
        _buffers.pop(int(ptr), None)


def alloc_pinned_ptr(size: int, device_id: int = 0) -> int:
    """Host buffer (unpinned: the HPU allocator cannot pin); returns its address like cudaHostAlloc."""
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
    return list(kv)


def multi_layer_kv_transfer(key_value: Any, kv_layers: Any, slot_mapping: Any, device: Any = None,
                            page_buffer_size: int = 0, direction: Any = True, use_mla: bool = False, *_: Any) -> None:
    """``key_value[kv, l, t] <-> layer[l][kv, slot_mapping[t]]``; direction True/D2H = paged -> key_value.

    ``kv_layers`` is a list of per-layer paged KV tensors in any layout ``kv_transfer`` understands.
    """
    from ..transfer import kv_transfer

    _, layers = kv_transfer.normalize(_tensors(kv_layers, "multi_layer_kv_transfer"), use_mla)
    n = int(slot_mapping.shape[0])
    idx = slot_mapping.to(layers[0][0].device).long()
    paged_to_buffer = direction is True or getattr(direction, "name", "") == "D2H"
    for li, views in enumerate(layers):
        for ki, view in enumerate(views):
            if paged_to_buffer:
                key_value[ki, li, :n].copy_(view.index_select(0, idx))
            else:
                view.index_copy_(0, idx, key_value[ki, li, :n].to(view.device))


def single_layer_kv_transfer(lmc_kv: Any, vllm_kv_layer: Any, slot_mapping: Any, direction: Any = True,
                             token_major: bool = False, vllm_two_major: bool = True, *_: Any) -> None:
    """One layer: ``lmc_kv`` is ``[2, T, hidden]`` (or ``[T, 2, hidden]`` when token_major)."""
    from ..transfer import kv_transfer

    _, layers = kv_transfer.normalize([vllm_kv_layer] if not isinstance(vllm_kv_layer, list) else vllm_kv_layer)
    (views,) = layers
    idx = slot_mapping.to(views[0].device).long()
    paged_to_buffer = direction is True or getattr(direction, "name", "") == "D2H"
    for ki, view in enumerate(views):
        dst = lmc_kv[:, ki] if token_major else lmc_kv[ki]
        if paged_to_buffer:
            dst[: idx.shape[0]].copy_(view.index_select(0, idx))
        else:
            view.index_copy_(0, idx, dst[: idx.shape[0]].to(view.device))


class _Enum:
    """Enum namespaces read by some releases; members are named sentinels created on first use."""

    def __init__(self, name: str, *members: str) -> None:
        self._name = name
        for m in members:
            setattr(self, m, _Member(name, m))

    def __getattr__(self, member: str) -> "_Member":
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
