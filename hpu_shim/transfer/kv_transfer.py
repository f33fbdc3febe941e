"""Batched KV gather/scatter between a paged KV cache on the device and LMCache memory objects.

Written for HPU lazy mode, where every ``mark_step`` flushes and launches a graph and every new
tensor-shape signature compiles one, and for the CPU backend, where the cost is memory bandwidth:

* one gather/scatter per batched call, whatever the number of chunks: all chunk slots are
  concatenated into one index, so a batched store or retrieve costs at most 2 ``mark_step`` and
  1 ``synchronize`` (LMCache 0.5.6's own HPU connector pays 2 or L+1 per *chunk*). The index is
  prepared in a graph of its own: a slot mapping on the device has the prompt's raw length, and
  any op reading it would otherwise put that length into the transfer graph's signature;
* only ``index_select``/``index_copy_`` on device tensors and one bulk host<->device copy: no raw
  device pointer is ever dereferenced from the host (the CUDA kernels' pointer arrays are not used);
* whole blocks, not tokens: vLLM hands out slots in runs of ``block_size``. When the slot mapping
  is a host tensor (reading it costs nothing), the index is checked for R-aligned runs of R slots
  (R from ``RUNS``) and those move as rows of a ``[slots/R, R*hidden]`` view, one index entry per
  run; a trailing partial run moves per token. A slot mapping already on the device is not
  inspected -- reading it would be a device->host sync -- so it moves per token;
* on devices that compile graphs (anything but CPU) index lengths are padded to buckets (four per
  power of two; a partial block is padded to a whole one) so the number of distinct graph signatures
  grows logarithmically with prompt length. Padding repeats the last block or slot, so padded
  gathers are discarded and padded scatters rewrite identical values. On CPU nothing is padded;
* on CPU, rows move as 16-byte words (complex128; int64 where alignment forbids) and are at most
  128 KiB (R shrinks to fit): ATen's ``index_select`` spreads rows of fewer than 32K elements (its
  GRAIN_SIZE) over the threads, but copies larger ones one after another, each on a single thread.
  A 256 KiB block is 128K bf16 elements or exactly 32K int64: gathered at 0.45x resp. 0.65x of a
  plain copy on 2 cores, against 0.95x for 128 KiB rows of words. ``index_copy_`` works element
  by element, so wider words also mean fewer elements: 1.0x with 16-byte words, 0.6-0.95x with
  8-byte ones when the other core is busy.

Layouts understood (``normalize``): LMCache's 5-D ``[2, NB, BS, H, D]``; vllm-gaudi's per-layer
``(K, V)`` of ``[NB, BS, H, D]`` (>= 0.11.2) or flat ``[NB*BS, H, D]`` (older raw tuples, scales
ignored); MLA ``[NB, BS, D]`` or ``[NB*BS, D]``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

__all__ = ["normalize", "bucket", "gather", "scatter", "LayoutError"]

#: Run lengths tried, longest first (vLLM block sizes are powers of two; Gaudi's default is 128).
RUNS = (256, 128, 64, 32, 16)
#: Largest row moved as one index entry: under ATen's parallel grain even as int64 (see above).
MAX_ROW_BYTES = 128 << 10


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


class _Plan(NamedTuple):
    """How positions ``[0, n)`` of the batch map to the paged cache: whole runs, then a per-token tail."""

    rows: int  # slots per index entry: R for whole runs, 1 for per-token
    ids: Any  # row ids into the [slots/R, R*hidden] view; they cover positions [0, len(ids) * rows)
    tail: Any  # slots of the positions after that (fewer than R; empty when rows == 1)
    n: int


def _plan(slot_mapping: Any, starts: Sequence[int], ends: Sequence[int], layers: list[tuple]) -> _Plan:
    """Whole aligned runs when the index is on the host; per token otherwise (no device read)."""
    import torch

    parts = [slot_mapping[s:e] for s, e in zip(starts, ends)]
    idx = parts[0] if len(parts) == 1 else torch.cat(parts)
    idx = idx if idx.dtype == torch.long else idx.long()
    n = int(idx.shape[0])
    first = layers[0][0]
    row_bytes, slots = first.shape[-1] * first.element_size(), first.shape[0]
    if idx.device.type == "cpu" and n and all(v.is_contiguous() for views in layers for v in views):
        head = int(idx[0])
        for r in RUNS:
            m = n // r
            if not m or r * row_bytes > MAX_ROW_BYTES or slots % r or head % r or int(idx[r - 1]) != head + r - 1:
                continue
            groups = idx[: m * r].view(m, r)
            starts_ = groups[:, 0]
            if bool((starts_ % r == 0).all()) and bool((groups == starts_[:, None] + torch.arange(r)).all()):
                return _Plan(r, starts_ // r, idx[m * r:], n)
    return _Plan(1, idx, idx[:0], n)


class _Padded(NamedTuple):
    """Device indices; the device buffer holds rows ``[body ids x R | tail]``."""

    ids: Any
    tail: Any
    positions: Any  # host: batch position of each buffer row (None when nothing is padded)


def _pad(plan: _Plan, device: Any) -> _Padded:
    """Bucket the run count and pad the tail to a whole run on graph devices; move indices there."""
    import torch

    r, ids, tail, n = plan
    m, t = int(ids.shape[0]), int(tail.shape[0])
    if device.type == "cpu":
        return _Padded(ids, tail, None)
    mb = bucket(m, minimum=max(4, 16 // r)) if m else 0
    tb = r if t else 0
    positions = None
    if mb > m or tb > t:
        ids = torch.cat([ids, ids[-1:].expand(mb - m)]) if mb > m else ids
        tail = torch.cat([tail, tail[-1:].expand(tb - t)]) if tb > t else tail
        rest = torch.arange(m * r, n)
        positions = torch.cat([torch.arange(m * r), torch.arange((m - 1) * r, m * r).repeat(mb - m), rest,
                               rest[-1:].expand(tb - t)])
    return _Padded(ids.to(device), tail.to(device), positions)


def _pairs(view: Any, buf: Any, r: int, m: int, cpu: bool) -> tuple[Any, Any]:
    """(paged rows, buffer rows) for the body: on CPU as 16- or 8-byte words when both views allow it."""
    import torch

    paged = view.view(-1, r * view.shape[-1]) if r > 1 else view
    body = buf[: m * r].view(-1, r * buf.shape[-1]) if r > 1 else buf[: m * r]
    for word in (torch.complex128, torch.int64) if cpu and r > 1 else ():
        try:
            return paged.view(word), body.view(word)  # a bit copy: no arithmetic ever touches the words
        except RuntimeError:  # storage offset or row size not a multiple of the word
            continue
    return paged, body


def gather(layers: list[tuple], slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
           mark_step: Callable[[], None], out: Any = None) -> Any:
    """Paged device KV -> one host tensor ``[kv, L, n, hidden]`` for all chunks (1 mark_step).

    The mark_step closes the graph that prepares the index; the blocking device->host copy then
    launches the transfer graph, whose shapes are all bucketed.

    ``out``: an optional host tensor ``[kv, L, >= n, hidden]`` to fill and return a view of, or one
    ``[kv, L, >= end - start, hidden]`` per chunk (LMCache's memory objects) to fill and return views
    of. On CPU this saves allocating (page-faulting) a fresh result, which costs more than the copy.
    """
    import torch

    if isinstance(out, (list, tuple)):
        return _gather_each(layers, slot_mapping, starts, ends, mark_step, out)
    first = layers[0][0]
    device, cpu = first.device, first.device.type == "cpu"
    plan = _plan(slot_mapping, starts, ends, layers)
    ids, tail, _ = _pad(plan, device)
    r, m, t, n = plan.rows, int(ids.shape[0]), int(tail.shape[0]), plan.n
    shape = (len(layers[0]), len(layers), m * r + t, first.shape[-1])
    if out is not None and (tuple(out.shape[:2]) != shape[:2] or out.shape[2] < n or out.shape[3] != shape[3]):
        raise ValueError(f"gather: out has shape {tuple(out.shape)}, needs "
                         f"[{shape[0]}, {shape[1]}, >= {n}, {shape[3]}]")
    mark_step()  # closes the index graph, so a device slot mapping's raw length stays out of the next one
    buf = out if cpu and out is not None else torch.empty(shape, dtype=first.dtype, device=device)
    for li, views in enumerate(layers):
        for ki, view in enumerate(views):
            dst = buf[ki, li]
            if m:
                paged, body = _pairs(view, dst, r, m, cpu)
                torch.index_select(paged, 0, ids, out=body)
            if t:
                torch.index_select(view, 0, tail, out=dst[m * r: m * r + t])
    host = buf.to("cpu")  # one blocking device->host copy; it launches the (bucketed) transfer graph
    real = int(plan.ids.shape[0]) * r
    if real < m * r and n > real:  # a padded body: the tail sits after the padding
        host[:, :, real:n].copy_(host[:, :, m * r: m * r + n - real])
    if out is not None and host is not out:
        out[:, :, :n].copy_(host[:, :, :n])
        return out[:, :, :n]
    return host[:, :, :n]


def _gather_each(layers: list[tuple], slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
                 mark_step: Callable[[], None], outs: Sequence) -> list:
    """Into each chunk's own destination: directly on CPU, else from the one device->host copy."""
    if layers[0][0].device.type == "cpu":
        mark_step()
        return [gather(layers, slot_mapping, [s], [e], _nothing, out=o) for s, e, o in zip(starts, ends, outs)]
    host = gather(layers, slot_mapping, starts, ends, mark_step)
    views, offset = [], 0
    for s, e, o in zip(starts, ends, outs):
        views.append(o[:, :, : e - s].copy_(host[:, :, offset: offset + e - s]))
        offset += e - s
    return views


def _nothing() -> None:
    pass


def scatter(layers: list[tuple], host: Any, slot_mapping: Any, starts: Sequence[int], ends: Sequence[int],
            mark_step: Callable[[], None], synchronize: Callable[[], None]) -> None:
    """One host tensor ``[kv, L, n, hidden]`` -> paged device KV (2 mark_step + 1 synchronize).

    ``host`` may also be one ``[kv, L, >= end - start, hidden]`` per chunk (LMCache's memory
    objects): read in place on CPU, concatenated for the one host->device copy elsewhere.
    """
    import torch

    first = layers[0][0]
    device, cpu = first.device, first.device.type == "cpu"
    if isinstance(host, (list, tuple)):
        parts = [h[:, :, : e - s] for h, s, e in zip(host, starts, ends)]
        if cpu:
            mark_step()
            for part, s, e in zip(parts, starts, ends):
                scatter(layers, part, slot_mapping, [s], [e], _nothing, _nothing)
            mark_step()
            synchronize()
            return
        host = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    plan = _plan(slot_mapping, starts, ends, layers)
    ids, tail, positions = _pad(plan, device)
    mark_step()  # closes the index graph (see gather)
    r, m, t = plan.rows, int(ids.shape[0]), int(tail.shape[0])
    if positions is not None:
        host = host.index_select(2, positions)
    src = host.to(device)  # one host->device copy (none on CPU)
    for li, views in enumerate(layers):
        for ki, view in enumerate(views):
            rows = src[ki, li]
            if m:
                paged, body = _pairs(view, rows, r, m, cpu)
                paged.index_copy_(0, ids, body)
            if t:
                view.index_copy_(0, tail, rows[m * r: m * r + t])
    mark_step()
    synchronize()
