"""The shim's batched LMCache connectors: one transfer implementation behind every release's class.

LMCache moves KV between the serving engine's paged cache and its own memory objects through a
*GPU connector*. The shim keeps LMCache's classes (constructor, ``from_metadata``, ``get_shape``,
memory formats) and replaces only their transfer methods, inside the scope, with
``BatchedTransfer``: every chunk of a batched call moves at once through ``hpu_shim.transfer``
(``store``/``retrieve``: validated before any write, one device sync per call, <= 2 ``mark_step``
in lazy mode and none in eager mode). The KV cache is recognised once per cache object by
``hpu_shim.transfer.kv_cache``, the one layout cache all connectors share. This module holds that
mixin, the substitute for the CUDA-only releases' ``VLLMPagedMemGPUConnectorV2`` (0.3.x - 0.4.2:
their compiled kernels dereference raw device pointers, which cannot exist on a Gaudi), the
layout fix for LMCache's own HPU connector (``make_flat_aware_connector``) and the classes that
refuse the connectors the shim cannot run on HPU (layerwise, blending, V3, SGLang) with a clear
error at construction. ``native_connector`` builds on it for LMCache >= 0.4.3 and
``cpu_connector`` for the cpu backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import transfer
from ..transfer import KVCache, LayoutError, TransferInputError

__all__ = [
    "BatchedTransfer",
    "KVPair",
    "TensorTuple",
    "TransferInputError",
    "as_four_d",
    "make_flat_aware_connector",
    "make_paged_connector",
    "make_unsupported_connector",
]


class BatchedTransfer:
    """Transfer methods for an LMCache connector class: all chunks of a batched call at once.

    Mixed in *before* LMCache's class. A host class provides ``_hpu_shim_cache()`` (the
    ``hpu_shim.transfer.KVCache`` of the KV cache it was handed) and ``_hpu_shim_format()`` (the
    memory format it produces and accepts). The memory objects are LMCache's own: a store writes
    straight into them, a retrieve reads them in place. A malformed call raises
    ``TransferInputError`` (a ``ValueError``) naming the connector, the call and what was wrong,
    before anything is written.
    """

    def _hpu_shim_cache(self) -> KVCache:  # pragma: no cover - provided by the host class
        raise NotImplementedError

    def _hpu_shim_format(self) -> Any:  # pragma: no cover - provided by the host class
        raise NotImplementedError

    @contextlib.contextmanager
    def _hpu_shim_errors(self, what: str) -> Iterator[None]:
        """Input errors name the connector and the call they came through (same exception type)."""
        try:
            yield
        except (TransferInputError, LayoutError) as exc:
            raise type(exc)(f"{type(self).__name__}.{what}: {exc}") from exc

    def _hpu_shim_prepare(self, kwargs: dict) -> tuple[KVCache, Any]:
        self.initialize_kvcaches_ptr(**kwargs)  # type: ignore[attr-defined]
        if "slot_mapping" not in kwargs:
            raise TransferInputError("'slot_mapping' should be provided in kwargs (one slot per token of the "
                                     "whole sequence)")
        if getattr(self, "kvcaches", None) is None:
            raise TransferInputError("kvcaches should be provided in kwargs or initialized beforehand")
        return self._hpu_shim_cache(), kwargs["slot_mapping"]

    def _hpu_shim_check_formats(self, memory_objs: list) -> None:
        want = self._hpu_shim_format()
        for i, obj in enumerate(memory_objs):
            fmt = obj.metadata.fmt
            if fmt != want:
                name = getattr(fmt, "name", fmt)
                raise TransferInputError(
                    f"memory object {i} is in {name} format; this connector reads {want.name} "
                    f"([kv, layers, tokens, hidden], what LMCache's paged GPU and HPU connectors store). {name} is "
                    f"written by another connector kind (KV_T2D by the layerwise connectors, KV_2TD by blending), "
                    f"which HPU does not support: store it with use_layerwise: false and enable_blending: false.")

    def batched_from_gpu(self, memory_objs, starts, ends, **kwargs):
        memory_objs = list(memory_objs)
        if not memory_objs:
            return
        with self._hpu_shim_errors("batched_from_gpu"):
            cache, slot_mapping = self._hpu_shim_prepare(kwargs)
            transfer.store(cache, slot_mapping, list(starts), list(ends), [obj.tensor for obj in memory_objs])
        fmt = self._hpu_shim_format()
        for obj in memory_objs:
            obj.metadata.fmt = fmt

    def batched_to_gpu(self, memory_objs, starts, ends, **kwargs):
        memory_objs = list(memory_objs)
        if not memory_objs:
            return
        with self._hpu_shim_errors("batched_to_gpu"):
            cache, slot_mapping = self._hpu_shim_prepare(kwargs)
            self._hpu_shim_check_formats(memory_objs)
            srcs = _host_sources([o.tensor for o in memory_objs])
            transfer.retrieve(cache, srcs, slot_mapping, list(starts), list(ends))

    def from_gpu(self, memory_obj, start, end, **kwargs):
        self.batched_from_gpu([memory_obj], [start], [end], **kwargs)

    def to_gpu(self, memory_obj, start, end, **kwargs):
        self.batched_to_gpu([memory_obj], [start], [end], **kwargs)


def _host_sources(tensors: list) -> list:
    """Memory-object tensors on the host, as ``hpu_shim.transfer.retrieve`` reads them.

    LMCache 0.5.x hands device-resident copies of its memory objects when it broadcasts them
    (``save_only_first_rank``, on by default for MLA): those come back in one device->host copy for
    the whole call, not one per chunk (the transfer path reads host memory objects only).
    """
    on_device = [i for i, t in enumerate(tensors) if t is not None and t.device.type != "cpu"]
    if not on_device:
        return tensors
    import torch

    out = list(tensors)
    picked = [tensors[i] for i in on_device]
    if len({(t.dtype, t.device) for t in picked}) != 1:
        for i in on_device:
            out[i] = tensors[i].cpu()
        return out
    host = torch.cat([t.reshape(-1) for t in picked]).cpu()
    offset = 0
    for i, t in zip(on_device, picked):
        out[i] = host[offset: offset + t.numel()].view(t.shape)
        offset += t.numel()
    return out


def make_paged_connector(base: type, rt: Any, memory_format: Any) -> type:
    """A subclass of a CUDA-only release's ``VLLMPagedMemGPUConnectorV2`` that transfers with torch ops."""

    class HPUPagedMemConnectorV2(BatchedTransfer, base):  # type: ignore[misc, valid-type]
        __doc__ = f"hpu_shim substitute for {base.__module__}.{base.__qualname__}: batched index_select/" \
                  f"index_copy_ on the device, <= 2 mark_step + 1 synchronize per batched call."
        __hpu_shim_substitute__ = f"{base.__module__}.{base.__qualname__}"

        def _hpu_shim_cache(self) -> KVCache:
            cache = transfer.kv_cache(self.kvcaches, use_mla=bool(getattr(self, "use_mla", False)),
                                      hidden=self.hidden_dim_size)
            self.hpu_shim_layout, self.device = cache.layout, cache.device
            return cache

        def _hpu_shim_format(self) -> Any:
            return memory_format.KV_MLA_FMT if getattr(self, "use_mla", False) else memory_format.KV_2LTD

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            # Defined here because 0.3.1 - 0.3.2 have no such hook, and 0.4.3+'s permutes *tensors*,
            # which the transfer path's layout table does not need.
            if "kvcaches" in kwargs:
                self.kvcaches = kwargs["kvcaches"]

        def _initialize_pointers(self, kv_caches: Any) -> None:  # no device pointers on HPU
            self.kvcaches = kv_caches
            self._hpu_shim_cache()

    HPUPagedMemConnectorV2.__name__ = HPUPagedMemConnectorV2.__qualname__ = base.__name__
    HPUPagedMemConnectorV2.__module__ = base.__module__
    return HPUPagedMemConnectorV2


def make_unsupported_connector(base: type, release: str, why: str, fix: str) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{base.__qualname__} (LMCache {release}) cannot run on HPU through hpu_shim: {why}. {fix}"
        )

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__,
                                         "__hpu_shim_substitute__": f"unsupported {base.__qualname__}"})


class KVPair(tuple):
    """A per-layer ``(K, V)`` that also answers ``.device``/``.dtype``/``.shape`` like vllm-gaudi's
    ``TensorTuple`` (``docs/gaudi-semantics.md``), which LMCache's HPU connector reads."""

    @property
    def device(self) -> Any:
        return self[0].device

    @property
    def dtype(self) -> Any:
        return self[0].dtype

    @property
    def shape(self) -> tuple:
        return (2, *self[0].shape)


class TensorTuple(KVPair):
    """vllm-gaudi's per-layer container (``hpu_model_runner.TensorTuple``, vllm-gaudi >= 0.11.2): a
    ``KVPair`` plus the pointer accessors vllm-gaudi also forwards to the first tensor. Reproduced here
    because ``selftest`` builds it on a real Gaudi, where ``hpu_shim.testing`` is never imported."""

    def data_ptr(self) -> int:
        return self[0].data_ptr()

    def untyped_storage(self) -> Any:
        return self[0].untyped_storage()


def as_four_d(kvcaches: Any) -> list:
    """Per-layer ``(K, V[, scales...])``: flat ``[rows, H, D]`` -> ``[rows, 1, H, D]`` views; 4-D kept.

    LMCache's HPU connector reads ``(K, V)`` as ``[NB, BS, H, D]``; vllm-gaudi < 0.11.2 hands over
    flat ``[NB*BS, H, D]`` (plus scales). The views share memory and slots with the originals.
    """
    out = []
    for layer in kvcaches:
        k, v = layer[0], layer[1]
        if k.dim() == 3:
            k, v = k.view(k.shape[0], 1, *k.shape[1:]), v.view(v.shape[0], 1, *v.shape[1:])
        elif hasattr(layer, "device") and len(layer) == 2:
            out.append(layer)  # already a TensorTuple
            continue
        out.append(KVPair((k, v)))
    return out


def tuples_as_four_d(self: Any, base: type, kwargs: dict) -> None:
    """``initialize_kvcaches_ptr`` for LMCache's HPU connector: per-layer tuples kept, flat ones viewed 4-D.

    ``self.kvcaches`` is what LMCache's own code reads; ``self.hpu_shim_raw_kvcaches`` what vLLM
    handed over (the transfer path reads that: flat layouts keep their block structure there).
    """
    if "kvcaches" not in kwargs:
        return
    raw = kwargs["kvcaches"]
    if raw is not None and len(raw) and isinstance(raw[0], (tuple, list)):
        self.kvcaches = as_four_d(raw)
    else:
        base.initialize_kvcaches_ptr(self, **kwargs)
    self.hpu_shim_raw_kvcaches = raw


def make_flat_aware_connector(base: type) -> type:
    """LMCache's own HPU connector with two Gaudi fixes to how it takes the KV cache.

    * vllm-gaudi's flat ``[NB*BS, H, D]`` (K, V) layout is viewed as ``[NB*BS, 1, H, D]``;
    * per-layer ``(K, V)`` tuples are stored as given. 0.4.3 - 0.4.4 inherit an
      ``initialize_kvcaches_ptr`` that permutes *tensors* and crashes on tuples
      (``'tuple' object has no attribute 'is_contiguous'``); later releases override it
      exactly this way, so this backports their fix.
    """

    def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
        tuples_as_four_d(self, base, kwargs)

    return type(base.__name__, (base,), {"initialize_kvcaches_ptr": initialize_kvcaches_ptr,
                                         "__module__": base.__module__, "__qualname__": base.__qualname__,
                                         "__doc__": base.__doc__,
                                         "__hpu_shim_substitute__": f"{base.__qualname__} + layout fixes"})
