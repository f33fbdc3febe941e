"""The paged KV cache layouts the transfer path understands, as one declarative table.

Every layout is reduced to the same shape of thing, a :class:`Plane` per (layer, K or V): a strided
view ``blocks[NB, K, BS, *feat]`` of the paged cache (K = how many of the memory object's K/V rows
the plane holds: 1, or 2 when K and V interleave inside a block), plus, when each block is one
contiguous run of memory, ``rows[NB, K*BS*hidden]`` for whole-block ``index_select``/``index_copy_``
and ``flat[NB*BS, hidden]`` for per-token moves. The memory object side is always LMCache's
``KV_2LTD`` ``[2, L, T, hidden]`` (``KV_MLA_FMT`` ``[1, L, T, hidden]`` for MLA), so a block of a
plane maps to ``obj[kv0:kv0+K, l, t:t+BS]`` viewed as ``[K, BS, *feat]``.

Rows of :data:`LAYOUTS` (first match wins): LMCache's CUDA 5-D ``[2, NB, BS, H, D]`` per layer,
flashinfer's ``[NB, 2, BS, H, D]``, vllm-gaudi's per-layer ``(K, V)`` of ``[NB, BS, H, D]``
(>= 0.11.2) or flat ``[NB*BS, H, D]`` (older raw tuples, scales ignored), MLA ``[NB, BS, D]`` or
``[NB*BS, D]``, and vLLM-CPU's ``[NB, H, BS, 2*D]`` (``cpu_attn.py``: per (block, head), BS K rows
then BS V rows). Flat layouts carry no block size: it comes from the caller, else vllm-gaudi's 128.
A 5-D tensor with NB == 2 reads as LMCache's ``[2, NB, ...]`` (the shapes cannot tell them apart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["DEFAULT_FLAT_BLOCK_SIZE", "LAYOUTS", "KVCache", "LayoutError", "Plane", "kv_cache"]

#: vllm-gaudi's only kernel block size; the guess for flat layouts that carry none.
DEFAULT_FLAT_BLOCK_SIZE = 128


class LayoutError(ValueError):
    """The KV cache handed to the transfer path has a layout it does not know (the message lists those it does)."""


class Plane(NamedTuple):
    """One layer's K, V, or interleaved K+V, as block views of the paged cache."""

    kv0: int  # first K/V row of the memory object this plane holds
    blocks: Any  # [NB, K, BS, *feat]
    rows: Any  # [NB, K*BS*hidden] when every block is one contiguous run of memory, else None
    flat: Any  # [NB*BS, hidden] per-token rows when they exist (K == 1), else None

    @property
    def k(self) -> int:
        return int(self.blocks.shape[1])


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "dim") and hasattr(x, "index_select")


def _is_pair(x: Any, dim: int) -> bool:
    return (isinstance(x, (tuple, list)) and len(x) >= 2 and _is_tensor(x[0]) and _is_tensor(x[1])
            and x[0].dim() == dim and x[0].shape == x[1].shape)


def _view(t: Any, *shape: int) -> Any:
    try:
        return t.view(*shape)
    except RuntimeError as exc:
        raise LayoutError(f"KV cache tensor of shape {tuple(t.shape)} and strides {tuple(t.stride())} cannot be "
                          f"viewed as {list(shape)} without a copy ({exc}); hand over the cache tensor itself, "
                          f"not a permuted or sliced copy") from None


def _plane(kv0: int, blocks: Any) -> Plane:
    """A plane from its ``[NB, K, BS, *feat]`` view: ``rows``/``flat`` only where they are views."""
    nb, k, bs = blocks.shape[:3]
    rows = flat = None
    try:
        rows = blocks.view(nb, -1)
    except RuntimeError:
        pass
    if k == 1:
        try:
            flat = blocks.view(nb * bs, -1)
        except RuntimeError:
            pass
    return Plane(kv0, blocks, rows, flat)


def _token_major(kv0: int, t: Any, nb: int, bs: int) -> Plane:
    """``t`` holds NB blocks of BS token rows: ``[NB, BS, ...]`` or ``[NB*BS, ...]``."""
    return _plane(kv0, _view(t, nb, 1, bs, -1))


def _flat_block_size(rows: int, hint: int | None) -> int:
    if hint:
        if rows % hint:
            raise LayoutError(f"a flat KV cache of {rows} rows is not a whole number of blocks of {hint} slots")
        return hint
    return DEFAULT_FLAT_BLOCK_SIZE if rows % DEFAULT_FLAT_BLOCK_SIZE == 0 else 1


def _five_d(layer: Any, hint: int | None) -> tuple[int, int, tuple]:
    _, nb, bs = layer.shape[:3]
    return nb, bs, tuple(_token_major(k, layer[k], nb, bs) for k in range(2))


def _flashinfer(layer: Any, hint: int | None) -> tuple[int, int, tuple]:
    nb, _, bs = layer.shape[:3]
    return nb, bs, tuple(_token_major(k, layer[:, k], nb, bs) for k in range(2))


def _kv_pair(layer: Any, hint: int | None) -> tuple[int, int, tuple]:
    k = layer[0]
    if k.dim() == 4:
        nb, bs = k.shape[:2]
    else:
        bs = _flat_block_size(k.shape[0], hint)
        nb = k.shape[0] // bs
    return nb, bs, tuple(_token_major(i, layer[i], nb, bs) for i in range(2))


def _mla(layer: Any, hint: int | None) -> tuple[int, int, tuple]:
    if layer.dim() == 3:
        nb, bs = layer.shape[:2]
    else:
        bs = _flat_block_size(layer.shape[0], hint)
        nb = layer.shape[0] // bs
    return nb, bs, (_token_major(0, layer, nb, bs),)


def _vllm_cpu(layer: Any, hint: int | None) -> tuple[int, int, tuple]:
    nb, h, bs, two_d = layer.shape
    halves = _view(layer, nb, h, 2, bs, two_d // 2)  # [..., 0, :, :] = K rows, [..., 1, :, :] = V rows
    return nb, bs, (_plane(0, halves.permute(0, 2, 3, 1, 4)),)  # [NB, 2, BS, H, D]


#: (name, matches(first layer, use_mla), build(layer, block size hint) -> (NB, BS, planes)); first match wins.
LAYOUTS: tuple[tuple[str, Callable[[Any, bool], bool], Callable[[Any, Any], tuple]], ...] = (
    ("mla [NB, BS, D]", lambda x, mla: mla and _is_tensor(x) and x.dim() == 3, _mla),
    ("mla flat [NB*BS, D]", lambda x, mla: mla and _is_tensor(x) and x.dim() == 2, _mla),
    ("lmcache 5-D [2, NB, BS, H, D]", lambda x, mla: not mla and _is_tensor(x) and x.dim() == 5 and x.shape[0] == 2,
     _five_d),
    ("flashinfer [NB, 2, BS, H, D]", lambda x, mla: not mla and _is_tensor(x) and x.dim() == 5 and x.shape[1] == 2,
     _flashinfer),
    ("vllm-gaudi (K, V) [NB, BS, H, D]", lambda x, mla: not mla and _is_pair(x, 4), _kv_pair),
    ("vllm-gaudi flat (K, V) [NB*BS, H, D]", lambda x, mla: not mla and _is_pair(x, 3), _kv_pair),
    ("vllm-cpu [NB, H, BS, 2*D]", lambda x, mla: not mla and _is_tensor(x) and x.dim() == 4 and x.shape[3] % 2 == 0,
     _vllm_cpu),
)


class KVCache:
    """A paged KV cache as planes per layer, with the facts the transfer path checks inputs against."""

    def __init__(self, layout: str, layers: list[tuple[Plane, ...]], num_blocks: int, block_size: int) -> None:
        first = layers[0][0].blocks
        self.layout = layout
        self.layers = layers
        self.num_layers = len(layers)
        self.kv = sum(p.k for p in layers[0])
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.feat = tuple(int(s) for s in first.shape[3:])
        self.hidden = 1
        for s in self.feat:
            self.hidden *= s
        self.dtype = first.dtype
        self.device = first.device

    @property
    def slots(self) -> int:
        return self.num_blocks * self.block_size

    def __repr__(self) -> str:
        return (f"KVCache({self.layout}: {self.num_layers} layers x {self.kv} x {self.num_blocks} blocks x "
                f"{self.block_size} slots x {self.hidden} ({'x'.join(map(str, self.feat))}), {self.dtype}, "
                f"{self.device})")

    @classmethod
    def from_kvcaches(cls, kvcaches: Sequence, use_mla: bool = False, block_size: int | None = None,
                      hidden: int | None = None) -> KVCache:
        """Normalize what vLLM/LMCache hand over; raises LayoutError naming the layouts understood.

        ``block_size`` is only needed for flat layouts (they carry none); ``hidden`` (heads x head size),
        when given, is checked, which tells vLLM-CPU's ``[NB, H, BS, 2*D]`` apart from a look-alike.
        """
        if kvcaches is None or len(kvcaches) == 0:
            raise LayoutError("the transfer path got an empty kvcaches list (the connector has no KV cache yet)")
        first = kvcaches[0]
        for name, matches, build in LAYOUTS:
            if matches(first, use_mla):
                break
        else:
            shape = tuple(first.shape) if _is_tensor(first) else [tuple(t.shape) for t in first if _is_tensor(t)]
            raise LayoutError(
                f"unsupported KV cache layout {type(first).__name__} {shape} (use_mla={use_mla}); hpu_shim "
                f"understands: " + "; ".join(n for n, _, _ in LAYOUTS))
        layers, geometry = [], None
        for i, layer in enumerate(kvcaches):
            if not matches(layer, use_mla):
                raise LayoutError(f"layer {i} of the KV cache is not in the layout of layer 0 ({name})")
            nb, bs, planes = build(layer, block_size)
            shape = (nb, bs, tuple(p.blocks.shape for p in planes), planes[0].blocks.dtype,
                     planes[0].blocks.device)
            if geometry is None:
                geometry = shape
            elif shape != geometry:
                raise LayoutError(f"layer {i} of the KV cache has blocks {shape[2]} {shape[3]} on {shape[4]}, "
                                  f"layer 0 has {geometry[2]} {geometry[3]} on {geometry[4]}: every layer must match")
            layers.append(planes)
        cache = cls(name, layers, geometry[0], geometry[1])
        if hidden is not None and cache.hidden != hidden:
            raise LayoutError(f"{cache!r} has a hidden size of {cache.hidden}, the connector expects {hidden} "
                              f"(num_kv_heads x head_size)")
        return cache


_memo_lock = threading.Lock()
_memo: dict = {}


def kv_cache(kvcaches: Sequence, use_mla: bool = False, block_size: int | None = None,
             hidden: int | None = None) -> KVCache:
    """``KVCache.from_kvcaches`` memoized on the identity of ``kvcaches`` (the connectors' one layout cache).

    vLLM hands the same list object to every call; the entry is rebuilt when the list, its first
    layer's storage or the arguments change. The 4 most recent caches are kept (and so referenced).
    """
    first = kvcaches[0] if kvcaches is not None and len(kvcaches) else None
    tensor = first if _is_tensor(first) else (first[0] if first is not None else None)
    key = (id(kvcaches), use_mla, block_size, hidden)
    stamp = (tensor.data_ptr(), tuple(tensor.shape), len(kvcaches)) if tensor is not None else None
    with _memo_lock:
        hit = _memo.get(key)
        if hit is not None and hit[0] is kvcaches and hit[1] == stamp:
            return hit[2]
    cache = KVCache.from_kvcaches(kvcaches, use_mla, block_size, hidden)
    with _memo_lock:
        if len(_memo) >= 4:
            _memo.pop(next(iter(_memo)))
        _memo[key] = (kvcaches, stamp, cache)
    return cache
