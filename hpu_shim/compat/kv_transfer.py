"""Batched KV gather/scatter between a paged KV cache on the device and LMCache memory objects.

Written for HPU lazy mode, where every ``mark_step`` flushes and launches a graph and every new
tensor-shape signature compiles one:

* one gather/scatter per batched call, whatever the number of chunks: all chunk slots are
  concatenated into one index, so a batched store or retrieve costs at most 2 ``mark_step`` and
  1 ``synchronize`` (LMCache 0.5.6's own HPU connector pays 2 or L+1 per *chunk*);
* only ``index_select``/``index_copy_`` on device tensors and one bulk host<->device copy: no raw
  device pointer is ever dereferenced from the host (the CUDA kernels' pointer arrays are not used);
* index lengths are padded to buckets (four per power of two) so the number of distinct graph
  signatures grows logarithmically with prompt length; padding repeats the last slot, so padded
  gathers are discarded and padded scatters rewrite identical values.

Layouts understood (``normalize``): LMCache's 5-D ``[2, NB, BS, H, D]``; vllm-gaudi's per-layer
``(K, V)`` of ``[NB, BS, H, D]`` (>= 0.11.2) or flat ``[NB*BS, H, D]`` (older raw tuples, scales
ignored); MLA ``[NB, BS, D]`` or ``[NB*BS, D]``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["normalize", "bucket", "gather", "scatter", "LayoutError"]


class LayoutError(ValueError):
    """The KV cache handed to the connector has a layout the shim does not know."""


def _flat(t: Any, rows: int) -> Any:
    try:
        return t.view(rows, -1)
    except RuntimeError as exc:
        raise LayoutError(f"KV cache tensor of shape {tuple(t.shape)} is not contiguous enough to view as "
                          f"[{rows}, hidden]: {exc}") from None


def _five_d(t: Any) -> tuple:
    two, nb, bs = t.shape[:3]
    return tuple(_flat(t[i], nb * bs) for i in range(2))


def _kv_pair(layer: Sequence) -> tuple:
    k, v = layer[0], layer[1]
    rows = k.shape[0] * k.shape[1] if k.dim() == 4 else k.shape[0]
    return _flat(k, rows), _flat(v, rows)


#: (name, predicate(layer, use_mla), per-layer views) -- first match wins.
LAYOUTS: tuple[tuple[str, Callable[[Any, bool], bool], Callable[[Any], tuple]], ...] = (
    ("mla [NB, BS, D]", lambda x, mla: mla and _is_tensor(x) and x.dim() == 3, lambda t: (_flat(t, t.shape[0] * t.shape[1]),)),
    ("mla [NB*BS, D]", lambda x, mla: mla and _is_tensor(x) and x.dim() == 2, lambda t: (t,)),
    ("lmcache 5-D [2, NB, BS, H, D]", lambda x, mla: _is_tensor(x) and x.dim() == 5 and x.shape[0] == 2, _five_d),
    ("vllm-gaudi (K, V) [NB, BS, H, D]", lambda x, mla: _is_pair(x, 4), _kv_pair),
    ("vllm-gaudi flat (K, V) [NB*BS, H, D]", lambda x, mla: _is_pair(x, 3), _kv_pair),
)


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "dim") and hasattr(x, "index_select")


def _is_pair(x: Any, dim: int) -> bool:
    return (isinstance(x, (tuple, list)) and len(x) >= 2 and _is_tensor(x[0]) and _is_tensor(x[1])
            and x[0].dim() == dim and x[0].shape == x[1].shape)


def normalize(kvcaches: Sequence, use_mla: bool = False) -> tuple[str, list[tuple]]:
    """Per-layer ``[slots, hidden]`` views (K, V) or (KV,) for MLA; raises LayoutError otherwise."""
    if not kvcaches:
        raise LayoutError("the connector got an empty kvcaches list")
    first = kvcaches[0]
    for name, matches, views in LAYOUTS:
        if matches(first, use_mla):
            return name, [views(layer) for layer in kvcaches]
    shape = tuple(first.shape) if _is_tensor(first) else [tuple(t.shape) for t in first if _is_tensor(t)]
    raise LayoutError(
        f"unsupported KV cache layout {type(first).__name__} {shape} (use_mla={use_mla}); hpu_shim understands: "
        + "; ".join(name for name, _, _ in LAYOUTS)
    )


def bucket(n: int, minimum: int = 16) -> int:
    """Smallest bucket >= n among {1, 1.25, 1.5, 1.75} x 2**k: <= 25% padding, O(log n) sizes."""
    if n <= minimum:
        return minimum
    top = 1 << (n - 1).bit_length()
    step = top // 8
    return min(b for b in (top // 2 + step * i for i in range(1, 5)) if b >= n)


def _padded_index(slot_mapping: Any, starts: Sequence[int], ends: Sequence[int], device: Any) -> tuple[Any, int]:
    import torch

    parts = [slot_mapping[s:e] for s, e in zip(starts, ends)]
    idx = parts[0] if len(parts) == 1 else torch.cat(parts)
    n = int(idx.shape[0])
    size = bucket(n)
    if size > n:
        idx = torch.cat([idx, idx[-1:].expand(size - n)])
    if idx.device != device:
        idx = idx.to(device)
    return idx.long() if idx.dtype != torch.long else idx, n


def gather(layers: list[tuple], slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
           mark_step: Callable[[], None]) -> Any:
    """Paged device KV -> one host tensor ``[kv, L, n, hidden]`` for all chunks (1 mark_step)."""
    import torch

    device = layers[0][0].device
    idx, n = _padded_index(slot_mapping, starts, ends, device)
    kv, num_layers, hidden = len(layers[0]), len(layers), layers[0][0].shape[-1]
    out = torch.empty(kv, num_layers, idx.shape[0], hidden, dtype=layers[0][0].dtype, device=device)
    for li, views in enumerate(layers):
        for ki, view in enumerate(views):
            out[ki, li].copy_(view.index_select(0, idx))
    mark_step()
    return out.to("cpu")[:, :, :n]  # one blocking device->host copy


def scatter(layers: list[tuple], host: Any, slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
            mark_step: Callable[[], None], synchronize: Callable[[], None]) -> None:
    """One host tensor ``[kv, L, n, hidden]`` -> paged device KV (1 mark_step + 1 synchronize)."""
    import torch

    device = layers[0][0].device
    idx, n = _padded_index(slot_mapping, starts, ends, device)
    if idx.shape[0] > n:
        host = torch.cat([host, host[:, :, -1:].expand(-1, -1, idx.shape[0] - n, -1)], dim=2)
    src = host.to(device)  # one host->device copy
    for li, views in enumerate(layers):
        for ki, view in enumerate(views):
            view.index_copy_(0, idx, src[ki, li])
    mark_step()
    synchronize()
