"""Gather (store: paged cache -> memory objects) and scatter (retrieve: memory objects -> paged cache).

:func:`store` and :func:`retrieve` are the transfer path's entry points. Both validate first
(``validation``), then plan (``planning``), then move the KV:

* **CPU backend** (cache on the host): straight between the paged cache and LMCache's memory
  objects, no intermediate buffer. Whole blocks of one contiguous run of memory move with one
  ``index_select``/``index_copy_`` per (segment, layer, K/V), rows reinterpreted as 16-byte words
  (complex128; int64 where alignment forbids: a bit copy, no arithmetic) and split to <= 128 KiB
  (:data:`MAX_ROW_BYTES`: ATen's ``index_select`` spreads rows of fewer than 32K elements over its
  threads but copies larger ones one after another, each on one thread). Blocks that are not one
  run of memory (vLLM-CPU's ``[NB, H, BS, 2*D]``, where a block's tokens interleave heads) move as
  runs of consecutive block ids, each run one strided copy; vLLM's free-block queue hands out
  ascending ids to a fresh request, so a chunk is usually one run.
* **Device** (HPU, or any other device): one *index graph* (derives block ids and the verdict,
  closed by ``mark_step`` in lazy mode) and one *transfer graph* (``index_select``/``index_copy_`` of
  whole blocks, per-token tails), with exactly one device sync per batched call: a store's blocking
  device->host copy into the staging buffer (which carries the verdict as a last row), a retrieve's
  ``synchronize`` after its host->device copy and *before* it writes the cache (the verdict travels
  by a non-blocking copy issued before it; the scatter then runs on the device after the call
  returns). Lazy mode: <= 2 ``mark_step`` + that sync; eager mode: no ``mark_step``. When the slot
  mapping is on the device its values are checked there; a failed verdict means nothing was
  written (a store's memory objects, a retrieve's cache), and the call raises (a slot outside the
  cache) or is redone token by token (not whole blocks), still bit-exact.

Indices never leave the cache: device indices are clamped before use; host ones were validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import staging
from .device import DeviceFacts
from .device import facts as device_facts
from .layouts import KVCache, Plane
from .planning import (
    NOT_BLOCKS,
    OK,
    RANGE_BAD,
    Plan,
    bucket,
    device_plan,
    host_plan,
    pad,
    token_plan,
)
from .validation import Chunks, TransferInputError, check_slot_values, validate

__all__ = ["MAX_ROW_BYTES", "retrieve", "store"]

#: Largest row moved as one CPU index entry: under ATen's parallel grain even as int64 (see above).
MAX_ROW_BYTES = 128 << 10


# -- entry points ---------------------------------------------------------------------------------------------

def store(cache: KVCache, slot_mapping: Any, starts: Sequence, ends: Sequence, outs: Sequence) -> list:
    """Paged KV -> ``outs[i][:, :, :ends[i] - starts[i]]`` (LMCache memory objects ``[kv, L, >= n, hidden]``).

    Returns those views. Raises :class:`TransferInputError` before writing anything on bad input.
    """
    outs = list(outs)
    chunks = validate(cache, slot_mapping, starts, ends, outs)
    if cache.device.type == "cpu":
        _cpu_gather(cache, host_plan(slot_mapping, chunks, cache), outs)
    else:
        for sub, objs in _rounds(cache, chunks, outs):
            _device_store(cache, device_facts(cache.device), slot_mapping, sub, objs)
    return [o[:, :, :n] for o, n in zip(outs, chunks.lengths)]


def retrieve(cache: KVCache, srcs: Sequence, slot_mapping: Any, starts: Sequence, ends: Sequence) -> None:
    """``srcs[i][:, :, :ends[i] - starts[i]]`` -> paged KV at ``slot_mapping[starts[i]:ends[i]]``.

    Raises :class:`TransferInputError` on bad input; the cache is then left exactly as it was.
    """
    srcs = list(srcs)
    chunks = validate(cache, slot_mapping, starts, ends, srcs)
    if cache.device.type == "cpu":
        _cpu_scatter(cache, host_plan(slot_mapping, chunks, cache), srcs)
        return
    for sub, objs in _rounds(cache, chunks, srcs):
        _device_retrieve(cache, device_facts(cache.device), slot_mapping, sub, objs)


def _rounds(cache: KVCache, chunks: Chunks, objs: list) -> list[tuple[Chunks, list]]:
    """Whole chunks grouped so that each round's staging fits ``staging.LIMIT`` (padding included)."""
    token_bytes = cache.kv * cache.num_layers * cache.hidden * cache.dtype.itemsize
    groups: list[list[int]] = [[]]
    tokens = 0
    for i, n in enumerate(chunks.lengths):
        if groups[-1] and _padded_bytes(tokens + n, cache, token_bytes) > staging.LIMIT:
            groups.append([])
            tokens = 0
        groups[-1].append(i)
        tokens += n
    if len(groups) == 1:
        return [(chunks, objs)]
    return [(Chunks(tuple(chunks.starts[i] for i in g), tuple(chunks.ends[i] for i in g)), [objs[i] for i in g])
            for g in groups]


def _padded_bytes(tokens: int, cache: KVCache, token_bytes: int) -> int:
    """Upper bound of a round's staging: bucket padding, a partial block per chunk boundary, the verdict row."""
    return (bucket(tokens) * 5 // 4 + 2 * cache.block_size + 1) * token_bytes


# -- device path ----------------------------------------------------------------------------------------------

def _plan_on_device(cache: KVCache, fx: DeviceFacts, slot_mapping: Any, chunks: Chunks) -> Plan:
    if slot_mapping.device.type == "cpu":
        return host_plan(slot_mapping, chunks, cache)  # values validated on the host: nothing to assume
    return device_plan(slot_mapping, chunks, cache, fx)


def _rows(cache: KVCache, mb: int, tb: int) -> int:
    return mb * cache.block_size + tb


def _device_store(cache: KVCache, fx: DeviceFacts, slot_mapping: Any, chunks: Chunks, outs: list,
                  redo: bool = False) -> None:

    plan = (token_plan(slot_mapping, chunks, cache, fx) if redo else
            _plan_on_device(cache, fx, slot_mapping, chunks))
    body, tail, mb, tb = pad(plan, fx, cache.device)
    fx.mark_step()  # closes the index graph: the slot mapping's raw length stays out of the transfer graph
    rows, hidden = _rows(cache, mb, tb), cache.hidden
    numel = cache.kv * cache.num_layers * rows * hidden
    nbytes = (numel + hidden) * cache.dtype.itemsize
    with staging.device_lease(numel + hidden, cache.dtype, cache.device) as buf, \
            staging.lease(nbytes, fx.pinned) as stg:
        data = buf[:numel].view(cache.kv, cache.num_layers, rows, hidden)
        _gather_device(cache, body, tail, mb, tb, data)
        if plan.verdict is not None:
            buf[numel:].copy_(plan.verdict.to(cache.dtype).expand(hidden))  # the verdict rides in the one D2H copy
        flat = stg.view(cache.dtype)
        flat.copy_(buf)  # the call's one blocking device->host copy; launches the transfer graph in lazy mode
        code = int(flat[numel].item()) if plan.verdict is not None else OK
        if code == OK:
            host = flat[:numel].view(cache.kv, cache.num_layers, rows, hidden)
            for seg in plan.segments:
                row = _row(seg, mb, cache.block_size)
                outs[seg.chunk][:, :, seg.local: seg.local + seg.length].copy_(host[:, :, row: row + seg.length])
            return
    _after_bad_verdict(code, cache, slot_mapping, chunks)
    _device_store(cache, fx, slot_mapping, chunks, outs, redo=True)


def _device_retrieve(cache: KVCache, fx: DeviceFacts, slot_mapping: Any, chunks: Chunks, srcs: list,
                     redo: bool = False) -> None:
    """Host staging -> device buffer, the call's one sync, then (verdict passed) the scatter into the cache.

    The sync comes *before* the cache is written: by then the host->device copy has read the staging
    buffer and the verdict is on the host, so a failed verdict writes nothing at all (no conditional
    ``torch.where`` over every row, which cost more than the copy itself) and the scatter runs on the
    device after the call returns, ordered before any later use of the cache by the device's queue.
    """
    plan = (token_plan(slot_mapping, chunks, cache, fx) if redo else
            _plan_on_device(cache, fx, slot_mapping, chunks))
    body, tail, mb, tb = pad(plan, fx, cache.device)
    rows, hidden = _rows(cache, mb, tb), cache.hidden
    numel = cache.kv * cache.num_layers * rows * hidden
    with staging.device_lease(numel, cache.dtype, cache.device) as dev, \
            staging.lease(numel * cache.dtype.itemsize, fx.pinned) as stg:
        host = stg.view(cache.dtype).view(cache.kv, cache.num_layers, rows, hidden)
        for seg in plan.segments:
            row = _row(seg, mb, cache.block_size)
            host[:, :, row: row + seg.length].copy_(srcs[seg.chunk][:, :, seg.local: seg.local + seg.length])
        _fill_padding(host, plan, mb, tb, cache.block_size)
        src = dev.view(host.shape)
        src.copy_(host, non_blocking=fx.pinned)  # the one host->device copy
        verdict = None
        if plan.verdict is not None:  # before mark_step: its copy then joins the index graph, not a graph of its own
            verdict = staging.verdict_buffer(fx.pinned)[:1]
            verdict.copy_(plan.verdict, non_blocking=True)  # read after the call's one synchronize
        fx.mark_step()  # launches the index graph (block ids, verdict) and the copy
        fx.synchronize()  # the call's one sync: the staging buffer is read, the verdict is here
        code = int(verdict[0]) if verdict is not None else OK
        if code == OK:
            _scatter_device(cache, body, tail, mb, tb, src)
            fx.mark_step()  # launches the transfer graph; no wait: the device orders it before later work
    if code != OK:
        _after_bad_verdict(code, cache, slot_mapping, chunks)
        _device_retrieve(cache, fx, slot_mapping, chunks, srcs, redo=True)


def _after_bad_verdict(code: int, cache: KVCache, slot_mapping: Any, chunks: Chunks) -> None:
    """Raise for slots outside the cache (reading the mapping now is fine: this is the error path)."""
    if code & RANGE_BAD:
        check_slot_values(slot_mapping, chunks, cache)
        raise TransferInputError("the device found a slot outside the KV cache in slot_mapping, but the host "
                                 "re-check did not; the slot mapping changed during the transfer")
    if code & ~NOT_BLOCKS:
        raise RuntimeError(f"hpu_shim transfer: unknown device verdict {code}")


def _row(seg: Any, mb: int, bs: int) -> int:
    return mb * bs + seg.offset if seg.tail else seg.offset


def _fill_padding(host: Any, plan: Plan, mb: int, tb: int, bs: int) -> None:
    """Padded index entries repeat the last real one; their source rows must repeat its data too."""
    m, t = plan.m, plan.t
    if mb > m:
        last = host[:, :, (m - 1) * bs: m * bs]
        host[:, :, m * bs: mb * bs].unflatten(2, (mb - m, bs)).copy_(last.unsqueeze(2).expand(-1, -1, mb - m, -1, -1))
    if tb > t:
        base = mb * bs
        host[:, :, base + t: base + tb].copy_(host[:, :, base + t - 1: base + t].expand(-1, -1, tb - t, -1))


def _device_rows(cache: KVCache) -> tuple[list, int, Any]:
    """Whole-block rows on the device as ``[NB*per, BS/per*hidden]`` int32 words where they divide; cached.

    Same bytes, fewer and wider elements: no float64/complex view on an HPU, but int32 is an HPU
    dtype. Rows are split to fewer than ``_GRAIN`` elements of the word used, which the bridge does
    not mind and which keeps a host-executed index op (the emulated HPU) off ATen's
    one-thread-per-row path (rows of exactly ``_GRAIN`` int32 words measured 1.4x slower).
    """
    import torch

    hit = cache.__dict__.get("_device_rows")
    if hit is None:
        bs, row_bytes = cache.block_size, cache.hidden * cache.dtype.itemsize
        word = torch.int32 if row_bytes % 4 == 0 and cache.dtype.itemsize < 4 else None
        size = 4 if word is not None else cache.dtype.itemsize
        r = bs
        while r > 1 and r % 2 == 0 and r * row_bytes // size >= _GRAIN:
            r //= 2
        per = bs // r
        views = [[None] * cache.kv for _ in cache.layers]
        for li, planes in enumerate(cache.layers):
            for p in planes:
                if p.k == 1 and p.rows is not None:
                    v = p.rows.view(-1, r * cache.hidden)
                    views[li][p.kv0] = v.view(word) if word is not None and _as_word(v, word) is not None else v
        hit = cache.__dict__["_device_rows"] = (views, per, word)
    return hit


def _device_ids(body: Any, per: int) -> Any:
    import torch

    if per == 1:
        return body
    return (body[:, None] * per + torch.arange(per, device=body.device)).flatten()


def _plane_rows(cache: KVCache, data: Any, mb: int) -> list | None:
    """The whole-block part of ``data`` (``[kv, L, rows, hidden]``) as ``[layer][kv]`` row views shaped and
    typed like :func:`_device_rows`' views of the cache (None where a plane has none).

    One ``unbind`` makes all of them: a handful of device ops per call instead of several per plane.
    """
    views, per, _ = _device_rows(cache)
    kinds = {(v.dtype, v.shape[1]) for kvs in views for v in kvs if v is not None}
    if len(kinds) != 1 or not mb:  # none, or planes that could not all take the word view: per plane
        return [[None if v is None else _row_view(data[kv, li, : mb * cache.block_size], v)
                 for kv, v in enumerate(kvs)] for li, kvs in enumerate(views)] if mb else None
    (dtype, _), = kinds
    body = data.flatten(0, 1)[:, : mb * cache.block_size]
    planes = body.reshape(body.shape[0], mb * per, -1).view(dtype).unbind(0)
    layers = cache.num_layers
    return [[planes[kv * layers + li] if v is not None else None for kv, v in enumerate(kvs)]
            for li, kvs in enumerate(views)]


def _row_view(t: Any, like: Any) -> Any:
    """``t`` (``[rows, hidden]`` of the cache dtype) as rows shaped and typed like ``like``."""
    t = t.reshape(-1, like.shape[1] * like.element_size() // t.element_size())
    return t if t.dtype == like.dtype else t.view(like.dtype)


def _gather_device(cache: KVCache, body: Any, tail: Any, mb: int, tb: int, data: Any) -> None:
    import torch

    bs, feat = cache.block_size, cache.feat
    views, per, _ = _device_rows(cache)
    sub = _device_ids(body, per) if mb else None
    outs = _plane_rows(cache, data, mb)
    for li, planes in enumerate(cache.layers):
        for p in planes:
            if mb and views[li][p.kv0] is not None:
                torch.index_select(views[li][p.kv0], 0, sub, out=outs[li][p.kv0])
                if not tb:
                    continue
            dst = data[p.kv0: p.kv0 + p.k, li]  # [K, rows, hidden]
            if mb and views[li][p.kv0] is None:
                dst[:, : mb * bs].view(p.k, mb, bs, *feat).copy_(p.blocks.index_select(0, body).movedim(1, 0))
            if tb:
                if p.flat is not None:
                    torch.index_select(p.flat, 0, tail, out=dst[0, mb * bs:])
                else:
                    dst[:, mb * bs:].view(p.k, tb, *feat).copy_(p.blocks[tail // bs, :, tail % bs].movedim(1, 0))


def _scatter_device(cache: KVCache, body: Any, tail: Any, mb: int, tb: int, src: Any) -> None:
    bs, feat = cache.block_size, cache.feat
    views, per, _ = _device_rows(cache)
    sub = _device_ids(body, per) if mb else None
    ins = _plane_rows(cache, src, mb)
    for li, planes in enumerate(cache.layers):
        for p in planes:
            if mb and views[li][p.kv0] is not None:
                views[li][p.kv0].index_copy_(0, sub, ins[li][p.kv0])
                if not tb:
                    continue
            rows = src[p.kv0: p.kv0 + p.k, li]
            if mb and views[li][p.kv0] is None:
                p.blocks.index_copy_(0, body, rows[:, : mb * bs].view(p.k, mb, bs, *feat).movedim(1, 0))
            if tb:
                if p.flat is not None:
                    p.flat.index_copy_(0, tail, rows[0, mb * bs:])
                else:
                    blk, off = tail // bs, tail % bs
                    p.blocks[blk, :, off] = rows[:, mb * bs:].view(p.k, tb, *feat).movedim(1, 0)


# -- CPU path -------------------------------------------------------------------------------------------------

_WORDS: tuple = ()


def _word_types() -> tuple:
    global _WORDS
    if not _WORDS:
        import torch

        _WORDS = (torch.complex128, torch.int64)
    return _WORDS


def _as_word(t: Any, word: Any) -> Any:
    try:
        return t.view(word)
    except RuntimeError:  # storage offset or row size not a multiple of the word
        return None


def _words(a: Any, b: Any) -> tuple[Any, Any]:
    """Both views as 16- or 8-byte words when both allow it (a bit copy moves fewer, wider elements)."""
    for word in _word_types():
        wa, wb = _as_word(a, word), _as_word(b, word)
        if wa is not None and wb is not None:
            return wa, wb
    return a, b


class _Rows:
    """Per cache: whole-block rows of R slots (R | BS, R x row bytes <= MAX_ROW_BYTES), in each word type.

    ``src[word][layer][kv]`` is a ``[NB*BS/R, R*hidden]`` view of the planes with whole-block rows
    (None for planes without). Built once per cache, so the per-call loop is index_select calls only.
    """

    def __init__(self, cache: KVCache) -> None:
        bs, row_bytes = cache.block_size, cache.hidden * cache.dtype.itemsize
        r = bs
        while r > 1 and r * row_bytes > MAX_ROW_BYTES and r % 2 == 0:
            r //= 2
        self.r, self.per = r, bs // r
        native = [[None] * cache.kv for _ in cache.layers]
        for li, planes in enumerate(cache.layers):
            for p in planes:
                if p.k == 1 and p.rows is not None:
                    native[li][p.kv0] = p.rows.view(-1, r * cache.hidden)
        self.src = {None: native}
        for word in _word_types():
            views = [[None if v is None else _as_word(v, word) for v in kvs] for kvs in native]
            if all(v is not None for kvs, nat in zip(views, native) for v, n in zip(kvs, nat) if n is not None):
                self.src[word] = views

    def objects(self, tensor: Any) -> tuple[Any, Any]:
        """(word type, the memory object as ``[kv, L, T/R, R*hidden]`` in it), or (None, None) if it cannot be."""
        kv, layers, t, hidden = tensor.shape
        if t % self.r or not tensor[0, 0].is_contiguous() or (kv > 1 and not tensor[1, 0].is_contiguous()):
            return None, None
        try:
            rows = tensor.view(kv, layers, t // self.r, self.r * hidden)
        except RuntimeError:
            return None, None
        for word in _word_types():
            if word in self.src:
                w = _as_word(rows, word)
                if w is not None:
                    return word, w
        return None, rows

    def ids(self, ids: Any) -> Any:
        import torch

        if self.per == 1:
            return ids
        return (ids[:, None] * self.per + torch.arange(self.per)).flatten()


def _rows_of(cache: KVCache) -> _Rows:
    rows = cache.__dict__.get("_cpu_rows")
    if rows is None:
        rows = cache.__dict__["_cpu_rows"] = _Rows(cache)
    return rows


def _block_words(cache: KVCache, p: Plane) -> tuple[Any, tuple]:
    """The plane's blocks with their dims in memory order (largest stride first) and as words; cached.

    A strided copy walks its output's dims in stride order: putting both sides in the source's
    memory order reads the cache sequentially, and 16-byte words make each inner row a few
    elements instead of a few hundred (8x faster for vLLM-CPU's 256-byte head rows).
    """
    memo = cache.__dict__.setdefault("_cpu_block_words", {})
    key = id(p.blocks)
    hit = memo.get(key)
    if hit is None or hit[0] is not p.blocks:
        strides = p.blocks.stride()
        order = (0, *sorted(range(1, p.blocks.dim()), key=lambda d: -strides[d]))
        blocks = p.blocks.permute(order)
        words = blocks
        for word in _word_types():
            w = _as_word(blocks, word)
            if w is not None:
                words = w
                break
        hit = memo[key] = (p.blocks, words, order, blocks)
    return hit[1], hit[2]


def _pair_words(cache: KVCache, p: Plane, other: Any) -> tuple[Any, Any]:
    """(the plane's blocks, ``other`` ``[nb, K, BS, *feat]``) in memory order, as words when both allow it."""
    src_w, order = _block_words(cache, p)
    other = other.permute(order)
    if src_w.dtype != other.dtype:
        w = _as_word(other, src_w.dtype)
        if w is None:  # the memory object's offset is not a multiple of the word
            return cache.__dict__["_cpu_block_words"][id(p.blocks)][3], other
        return src_w, w
    return src_w, other


def _runs(ids: Any) -> list[tuple[int, int, int]]:
    """``(position, first id, length)`` of each maximal run of consecutive ascending ids."""
    n = int(ids.shape[0])
    if n == 0:
        return []
    breaks = ((ids[1:] - ids[:-1]) != 1).nonzero().flatten().tolist()
    starts = [0] + [b + 1 for b in breaks]
    ends = starts[1:] + [n]
    first = ids[starts].tolist() if len(starts) > 1 else [int(ids[0])]
    return [(s, f, e - s) for s, f, e in zip(starts, first, ends)]


#: ATen's parallel grain: a copy of more elements opens a parallel region, one of fewer runs on the caller's thread.
_GRAIN = 32768


def _serial_copy(dst: Any, src: Any) -> None:
    """``dst.copy_(src)`` in pieces under ATen's grain, for copies that read 256-byte rows from far apart.

    Such a copy (the cache side in memory order, the memory object's head rows strided) walks its
    output in order and reads scattered; split over threads it was 4-10x slower than on one thread
    on a loaded 2-core machine (each parallel region waits for a descheduled worker), so it is
    issued as pieces of at most ``_GRAIN`` elements, each on the calling thread.
    """
    if dst.numel() <= _GRAIN or dst.dim() == 0:
        dst.copy_(src)
        return
    n = dst.shape[0]
    if n > 1:
        step = max(1, n * _GRAIN // dst.numel())
        for i in range(0, n, step):
            _serial_copy(dst[i: i + step], src[i: i + step])
    else:
        _serial_copy(dst[0], src[0])


def _cpu_gather(cache: KVCache, plan: Plan, outs: list) -> None:
    _cpu_move(cache, plan, outs, gather=True)


def _cpu_scatter(cache: KVCache, plan: Plan, srcs: list) -> None:
    _cpu_move(cache, plan, srcs, gather=False)


def _cpu_move(cache: KVCache, plan: Plan, objs: list, gather: bool) -> None:
    """Segments straight between the cache and the memory objects: whole-block rows, block runs, tokens."""
    import torch

    bs, feat, rows = plan.block_size, cache.feat, _rows_of(cache)
    seen: dict = {}
    for seg in plan.segments:
        obj = objs[seg.chunk]
        a, b = seg.local, seg.local + seg.length
        if seg.tail:
            slots = plan.tail[seg.offset: seg.offset + seg.length]
        else:
            ids = plan.body[seg.offset // bs: (seg.offset + seg.length) // bs]
            sub, runs = None, None
            word, objw = seen[id(obj)] if id(obj) in seen else seen.setdefault(id(obj), rows.objects(obj))
            src = rows.src.get(word) if objw is not None else None
        for li, planes in enumerate(cache.layers):
            for p in planes:
                if not seg.tail and src is not None and src[li][p.kv0] is not None:
                    sub = rows.ids(ids) if sub is None else sub
                    dst = objw[p.kv0, li, a // rows.r: b // rows.r]
                    if gather:
                        torch.index_select(src[li][p.kv0], 0, sub, out=dst)
                    else:
                        src[li][p.kv0].index_copy_(0, sub, dst)
                    continue
                part = obj[p.kv0: p.kv0 + p.k, li, a:b]  # [K, n, hidden]
                if seg.tail:
                    _cpu_tokens(p, slots, part, bs, feat, gather)
                elif gather:  # one index_select, rows as words in memory order
                    src_w, dst_w = _pair_words(cache, p, part.view(p.k, -1, bs, *feat).movedim(1, 0))
                    torch.index_select(src_w, 0, ids, out=dst_w)
                else:  # index_copy_ into strided blocks goes element by element: copies of runs of ids
                    runs = runs if runs is not None else _runs(ids)
                    dst_w, src_w = _pair_words(cache, p, part.view(p.k, -1, bs, *feat).movedim(1, 0))
                    for j, first, n in runs:
                        _serial_copy(dst_w[first: first + n], src_w[j: j + n])


def _cpu_tokens(p: Plane, slots: Any, part: Any, bs: int, feat: tuple, gather: bool) -> None:
    import torch

    if p.flat is not None and part[0].is_contiguous():
        flat_w, part_w = _words(p.flat, part[0])
        if gather:
            torch.index_select(flat_w, 0, slots, out=part_w)
        else:
            flat_w.index_copy_(0, slots, part_w)
    elif gather:
        part.view(p.k, -1, *feat).copy_(p.blocks[slots // bs, :, slots % bs].movedim(1, 0))
    else:
        p.blocks[slots // bs, :, slots % bs] = part.view(p.k, -1, *feat).movedim(1, 0)
