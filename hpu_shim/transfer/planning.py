"""Which cache rows each token of a batched call moves through: whole blocks where possible, tokens otherwise.

vLLM hands out slots in whole blocks (slot = block_id * block_size + offset) and LMCache chunks
start at multiples of the block size, so a chunk's tokens are, block by block, one contiguous
aligned run of slots: the chunk moves as whole-block rows, one index entry per block, plus a
per-token tail when its length is not a whole number of blocks. A :class:`Plan` lists the block
ids (the *body*, ``BS`` rows each) and the tail slots, and the :class:`Segment` s that map its
rows to the memory objects (body rows first, then tail rows, in chunk order).

Where the slot mapping lives decides how the plan is made:

* on the host (free to read): :func:`host_plan` checks each block and routes any block that is
  not an aligned contiguous run through the tail, token by token;
* on the device (reading it is a device->host sync): :func:`device_plan` *assumes* the block
  structure, derives the block ids on the device (``slot_mapping[start::BS] // BS``) and computes a
  verdict there too -- :data:`RANGE_BAD` if any slot is negative or past the cache,
  :data:`NOT_BLOCKS` if a chunk is not whole aligned runs. The transfer reads the verdict in the
  one sync it already has and then raises, or redoes the call per token (:func:`token_plan`).
  Until then every index is clamped into the cache, so no device access is ever out of bounds.

In lazy mode (:func:`pad`) body lengths are padded to buckets (:func:`bucket`: four per power of
two, <= 25% padding) and a tail shorter than a block to one block (:func:`tail_bucket`), by
repeating the last entry, so the number of distinct transfer-graph
signatures grows with the logarithm of the prompt length; padded gathers are discarded and padded
scatters rewrite identical values. Eager mode pads nothing (shape-agnostic eager compilation makes
padding pure overhead). Host indices travel to an HPU as int32 (``device.DeviceFacts.index_dtype``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .device import DeviceFacts
from .layouts import KVCache
from .validation import Chunks

__all__ = [
    "NOT_BLOCKS",
    "OK",
    "RANGE_BAD",
    "Plan",
    "Segment",
    "bucket",
    "device_plan",
    "host_plan",
    "pad",
    "tail_bucket",
    "token_plan",
]

#: Verdict codes computed on the device (bit flags).
OK, NOT_BLOCKS, RANGE_BAD = 0, 1, 2


def bucket(n: int, minimum: int = 16) -> int:
    """Smallest bucket >= n among {1, 1.25, 1.5, 1.75} x 2**k: <= 25% padding, O(log n) sizes."""
    if n <= minimum:
        return minimum
    top = 1 << (n - 1).bit_length()
    step = top // 8
    return min(b for b in (top // 2 + step * i for i in range(1, 5)) if b >= n)


class Segment(NamedTuple):
    """``length`` tokens of chunk ``chunk`` from its token ``local`` on: body rows or tail rows of the plan."""

    chunk: int
    local: int
    tail: bool  # False: body rows starting at block ``offset // BS``; True: tail rows from ``offset``
    offset: int  # row offset within the body (a multiple of BS) or within the tail
    length: int


class Plan(NamedTuple):
    """Body block ids and tail slots (host or device tensors), their real counts, and the segments."""

    block_size: int
    body: Any  # [m] block ids
    tail: Any  # [t] slots
    m: int
    t: int
    segments: tuple[Segment, ...]
    verdict: Any = None  # device int32 [1] (OK, or NOT_BLOCKS | RANGE_BAD), or None when nothing is assumed

    @property
    def body_rows(self) -> int:
        return self.m * self.block_size


def _cat(parts: list, like: Any) -> Any:
    import torch

    if not parts:
        return like[:0]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def host_plan(slot_mapping: Any, chunks: Chunks, cache: KVCache) -> Plan:
    """Block rows for every aligned contiguous block of a host slot mapping (values already validated)."""
    import torch

    bs = cache.block_size
    sm = slot_mapping if slot_mapping.dtype == torch.int64 else slot_mapping.long()
    body, tail, segments = [], [], []
    m = t = 0
    arange = torch.arange(bs) if bs > 1 else None
    for i, (s, e) in enumerate(zip(chunks.starts, chunks.ends)):
        n, nb = e - s, (e - s) // bs
        if bs == 1 or s % bs or not nb:
            nb = 0
            good = []
        else:
            blk = sm[s: s + nb * bs].view(nb, bs)
            heads = blk[:, 0]
            ok = (heads % bs == 0) & (blk == heads[:, None] + arange).all(1)
            good = [True] * nb if bool(ok.all()) else ok.tolist()
        j = 0
        while j < nb:  # runs of good blocks -> body; runs of bad ones -> tail, token by token
            k = j
            while k < nb and good[k] == good[j]:
                k += 1
            if good[j]:
                body.append(sm[s + j * bs: s + k * bs: bs])
                segments.append(Segment(i, j * bs, False, m * bs, (k - j) * bs))
                m += k - j
            else:
                tail.append(sm[s + j * bs: s + k * bs])
                segments.append(Segment(i, j * bs, True, t, (k - j) * bs))
                t += (k - j) * bs
            j = k
        if n > nb * bs:
            tail.append(sm[s + nb * bs: e])
            segments.append(Segment(i, nb * bs, True, t, n - nb * bs))
            t += n - nb * bs
    ids = _cat(body, sm) // bs if bs > 1 else sm[:0]
    return Plan(bs, ids, _cat(tail, sm), m, t, tuple(segments))


def _chunk_segments(chunks: Chunks, bs: int) -> tuple[tuple[Segment, ...], int, int]:
    segments, m, t = [], 0, 0
    for i, n in enumerate(chunks.lengths):
        nb = n // bs
        if nb:
            segments.append(Segment(i, 0, False, m * bs, nb * bs))
            m += nb
        if n > nb * bs:
            segments.append(Segment(i, nb * bs, True, t, n - nb * bs))
            t += n - nb * bs
    return tuple(segments), m, t


def device_plan(slot_mapping: Any, chunks: Chunks, cache: KVCache, facts: DeviceFacts) -> Plan:
    """Block ids derived on the device, with the device verdict; nothing is read on the host."""
    import torch

    bs, slots = cache.block_size, cache.slots
    if bs == 1 or any(s % bs for s in chunks.starts):  # chunks not at block starts: tokens, range check only
        return token_plan(slot_mapping, chunks, cache, facts, verdict=True)
    dev = slot_mapping.device
    fulls, tails, spans = [], [], []
    for a, b in chunks.ranges():  # inside a range only the last chunk can have a tail (starts are aligned)
        nb = (b - a) // bs
        if nb:
            fulls.append(slot_mapping[a: a + nb * bs].view(nb, bs))
        if b - a > nb * bs:
            tails.append(slot_mapping[a + nb * bs: b])
        spans.append(slot_mapping[a:b])
    segments, m, t = _chunk_segments(chunks, bs)
    every = _cat(spans, slot_mapping)
    bad = (every < 0) | (every >= slots)
    verdict = bad.any().reshape(1).to(torch.int32) * RANGE_BAD  # shape [1]: copied to the host as is
    if fulls:
        full = _cat(fulls, slot_mapping)
        heads = full[:, 0]
        step = full - heads[:, None]
        structured = (step == torch.arange(bs, device=dev, dtype=step.dtype)).all() & (heads % bs == 0).all()
        verdict = verdict + (~structured).to(torch.int32) * NOT_BLOCKS
        ids = (heads // bs).clamp(0, cache.num_blocks - 1).long()
    else:
        ids = slot_mapping[:0].long()
    tail = _cat(tails, slot_mapping).clamp(0, slots - 1).long()
    return Plan(bs, ids, tail, m, t, segments, verdict)


def token_plan(slot_mapping: Any, chunks: Chunks, cache: KVCache, facts: DeviceFacts, verdict: bool = False) -> Plan:
    """Every token through the tail (no block assumption); with ``verdict``, a device range check."""
    import torch

    spans = [slot_mapping[a:b] for a, b in chunks.ranges()]
    every = _cat(spans, slot_mapping)
    segments, t = [], 0
    for i, n in enumerate(chunks.lengths):
        segments.append(Segment(i, 0, True, t, n))
        t += n
    code = None
    if verdict:
        code = ((every < 0) | (every >= cache.slots)).any().reshape(1).to(torch.int32) * RANGE_BAD
        every = every.clamp(0, cache.slots - 1)
    return Plan(cache.block_size, slot_mapping[:0].long(), every.long(), 0, t, tuple(segments), code)


def tail_bucket(t: int, block_size: int) -> int:
    """Padded length of a tail of ``t`` slots: one whole block when it fits in one, else :func:`bucket`.

    A chunk that starts at a block start has a tail shorter than a block, so nearly every call's
    tail pads to the same length and the transfer graph's signature depends on the body bucket alone
    (tails bucketed on their own multiplied the signatures: 56-58 over 64 prompt lengths, figure G).
    """
    if not t:
        return 0
    return block_size if t <= block_size else bucket(t)


def pad(plan: Plan, facts: DeviceFacts, device: Any) -> tuple[Any, Any, int, int]:
    """Body ids and tail slots on ``device`` (int64 there), padded to buckets in lazy mode.

    Host indices cross to the device as ``facts.index_dtype`` (int32 on HPU: lazy mode would cast
    int64 on the host at the copy) and are widened there, where Long costs nothing in lazy mode.

    Returns ``(body, tail, mb, tb)``; ``mb``/``tb`` are the padded counts (the real ones when eager).
    """
    import torch

    body, tail, m, t = plan.body, plan.tail, plan.m, plan.t
    mb, tb = m, t
    if facts.lazy:
        mb = bucket(m, minimum=max(4, 16 // max(plan.block_size, 1))) if m else 0
        tb = tail_bucket(t, plan.block_size)
        if mb > m:
            body = torch.cat([body, body[-1:].expand(mb - m)])
        if tb > t:
            tail = torch.cat([tail, tail[-1:].expand(tb - t)])
    if body.device.type == "cpu" and device.type != "cpu":
        body, tail = body.to(facts.index_dtype), tail.to(facts.index_dtype)  # int32 travels
        body, tail = body.to(device).long(), tail.to(device).long()
    return body, tail, mb, tb
