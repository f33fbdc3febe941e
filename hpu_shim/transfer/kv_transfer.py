"""The transfer API before the split into ``layouts``/``planning``/``validation``/``kernels``, kept for its callers.

``normalize(kvcaches, use_mla)`` still returns ``(layout name, per-layer (K, V) or (KV,) [slots,
hidden] views)`` (``compat/c_ops.py`` indexes those views directly); the list it returns also carries
the :class:`~hpu_shim.transfer.layouts.KVCache` it came from, so ``gather``/``scatter`` keep the real
block size. ``gather``/``scatter`` run :func:`~hpu_shim.transfer.kernels.store` /
:func:`~hpu_shim.transfer.kernels.retrieve` -- validated, block-level, with device slot mappings --
and ignore their ``mark_step``/``synchronize`` arguments: the device facts decide (no ``mark_step``
in eager mode). New code calls ``hpu_shim.transfer.store``/``retrieve`` with a ``KVCache``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .kernels import retrieve, store
from .layouts import DEFAULT_FLAT_BLOCK_SIZE, KVCache, LayoutError, _plane
from .planning import bucket, host_plan
from .validation import TransferInputError, check_chunks, check_slot_mapping

__all__ = ["LayoutError", "TransferInputError", "bucket", "gather", "normalize", "scatter"]


class _Layers(list):
    """``normalize``'s per-layer views, plus the ``KVCache`` they came from (``.cache``)."""

    cache: KVCache


def normalize(kvcaches: Sequence, use_mla: bool = False) -> tuple[str, list[tuple]]:
    """Per-layer ``[slots, hidden]`` views (K, V) or (KV,) for MLA; raises LayoutError otherwise."""
    cache = KVCache.from_kvcaches(kvcaches, use_mla)
    layers = _Layers()
    for planes in cache.layers:
        views = []
        for p in planes:
            if p.k != 1 or p.flat is None:
                raise LayoutError(f"{cache.layout} has no per-token [slots, hidden] rows; use "
                                  f"hpu_shim.transfer.KVCache with store/retrieve instead of normalize()")
            views.append(p.flat)
        layers.append(tuple(views))
    layers.cache = cache
    return cache.layout, layers


def _cache_of(layers: Sequence) -> KVCache:
    cache = getattr(layers, "cache", None)
    if cache is not None:
        return cache
    # Hand-built [slots, hidden] views: the block size is not known; vllm-gaudi's 128 when it divides.
    slots = layers[0][0].shape[0]
    bs = DEFAULT_FLAT_BLOCK_SIZE if slots % DEFAULT_FLAT_BLOCK_SIZE == 0 else 1
    planes = [tuple(_plane(k, v.view(slots // bs, 1, bs, -1)) for k, v in enumerate(views)) for views in layers]
    return KVCache("[slots, hidden] views", planes, slots // bs, bs)


def _split(cache: KVCache, whole: Any, starts: Sequence, ends: Sequence, what: str) -> list:
    """One ``[kv, L, >= n, hidden]`` tensor for all chunks -> one view per chunk."""
    n = sum(int(e) - int(s) for s, e in zip(starts, ends))
    want = [cache.kv, cache.num_layers, n, cache.hidden]
    shape = list(whole.shape)
    if len(shape) != 4 or shape[:2] != want[:2] or shape[2] < n or shape[3] != want[3]:
        raise TransferInputError(f"{what} has shape {tuple(shape)}, needs [{want[0]}, {want[1]}, >= {n}, {want[3]}]")
    views, offset = [], 0
    for s, e in zip(starts, ends):
        views.append(whole[:, :, offset: offset + int(e) - int(s)])
        offset += int(e) - int(s)
    return views


def gather(layers: Sequence, slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
           mark_step: Callable[[], None] | None = None, out: Any = None) -> Any:
    """Paged KV -> ``[kv, L, n, hidden]`` for all chunks (``out``: that tensor, or one per chunk)."""
    import torch

    cache = _cache_of(layers)
    check_chunks(starts, ends, check_slot_mapping(slot_mapping, cache))
    if isinstance(out, (list, tuple)):
        return store(cache, slot_mapping, starts, ends, out)
    n = sum(int(e) - int(s) for s, e in zip(starts, ends))
    if out is None:
        out = torch.empty(cache.kv, cache.num_layers, n, cache.hidden, dtype=cache.dtype)
    store(cache, slot_mapping, starts, ends, _split(cache, out, starts, ends, "gather: out"))
    return out[:, :, :n]


def scatter(layers: Sequence, host: Any, slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
            mark_step: Callable[[], None] | None = None, synchronize: Callable[[], None] | None = None) -> None:
    """``[kv, L, n, hidden]`` (or one ``[kv, L, >= end - start, hidden]`` per chunk) -> paged KV."""
    cache = _cache_of(layers)
    check_chunks(starts, ends, check_slot_mapping(slot_mapping, cache))
    srcs = host if isinstance(host, (list, tuple)) else _split(cache, host, starts, ends, "scatter: host")
    retrieve(cache, srcs, slot_mapping, starts, ends)


def _plan(slot_mapping: Any, starts: Sequence[int], ends: Sequence[int], layers: Sequence) -> Any:
    """What the host knows of the plan: ``.rows`` = slots per index entry of its body (1 if none).

    A slot mapping on the device is not read (that would be a sync): ``.rows`` is 1 and ``.plan``
    None, and the transfer derives the block ids on the device instead (``planning.device_plan``).
    """
    cache = _cache_of(layers)
    if slot_mapping.device.type != "cpu":
        return _PlanView(None, 1)
    plan = host_plan(slot_mapping, check_chunks(starts, ends, int(slot_mapping.shape[0])), cache)
    return _PlanView(plan, plan.block_size if plan.m else 1)


class _PlanView:
    def __init__(self, plan: Any, rows: int) -> None:
        self.plan, self.rows = plan, rows
