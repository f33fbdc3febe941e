"""Input checks every transfer entry point runs before it writes anything, with errors that say what to fix.

A transfer trusts three things it is handed: the slot mapping (which cache slots the tokens live
in), the chunk bounds (which tokens each memory object holds) and the memory objects. A slot
mapping shorter than the tokens used to be accepted silently, writing only the tokens that had a
slot. So :func:`validate` checks, before any write: the chunk bounds (integers, ordered, inside the
slot mapping, not overlapping), the slot mapping's type, rank, integer dtype and device, and each
memory object's rank, K/V count, layer count, token capacity, hidden size, dtype and device against
the :class:`~hpu_shim.transfer.layouts.KVCache`. Those are host metadata: free. The *values* of a
slot mapping (no negative slot, none past the cache) are checked here only when the mapping is on
the host; reading a device mapping would be a device->host sync, so the device path checks its
values on the device and reads the verdict in the sync the call already has
(``hpu_shim.transfer.planning``), then calls :func:`check_slot_values` on the error path only, for
the message. Every failure is one exception type, :class:`TransferInputError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

from .layouts import KVCache

__all__ = [
    "INDEX_DTYPES",
    "Chunks",
    "TransferInputError",
    "check_chunks",
    "check_memory_objects",
    "check_slot_mapping",
    "check_slot_values",
    "validate",
]

#: Accepted slot-mapping dtypes (vLLM and LMCache use int64; int32 is what a Gaudi holds in lazy mode).
INDEX_DTYPES = ("torch.int64", "torch.int32")


class TransferInputError(ValueError):
    """A transfer input is malformed; the message names the input, what it was and what was expected."""


class Chunks(NamedTuple):
    """Chunk bounds as Python ints, checked: ``starts[i] < ends[i]``, in order, not overlapping."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(e - s for s, e in zip(self.starts, self.ends))

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def ranges(self) -> list[tuple[int, int]]:
        """Maximal runs of adjacent chunks as ``(start, end)`` position ranges."""
        out: list[list[int]] = []
        for s, e in zip(self.starts, self.ends):
            if out and out[-1][1] == s:
                out[-1][1] = e
            else:
                out.append([s, e])
        return [(s, e) for s, e in out]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1 and not value.dtype.is_floating_point:
            return int(value.item())
        raise TransferInputError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def check_chunks(starts: Sequence, ends: Sequence, length: int | None = None) -> Chunks:
    """Chunk bounds against each other and, when given, the slot mapping's ``length``."""
    try:
        starts, ends = list(starts), list(ends)
    except TypeError as exc:
        raise TransferInputError(f"starts and ends must be sequences of token positions: {exc}") from None
    if len(starts) != len(ends):
        raise TransferInputError(f"starts has {len(starts)} entries but ends has {len(ends)}: one (start, end) "
                                 f"pair per memory object is expected")
    if not starts:
        raise TransferInputError("no chunks: starts and ends are empty")
    s_ = tuple(_as_int(v, f"starts[{i}]") for i, v in enumerate(starts))
    e_ = tuple(_as_int(v, f"ends[{i}]") for i, v in enumerate(ends))
    previous_end = None
    for i, (s, e) in enumerate(zip(s_, e_)):
        if s < 0 or e <= s:
            raise TransferInputError(f"chunk {i} is [{s}, {e}): a chunk needs 0 <= start < end")
        if length is not None and e > length:
            raise TransferInputError(
                f"chunk {i} is [{s}, {e}) but the slot mapping has only {length} entries: the slot mapping is "
                f"shorter than the tokens; it must give a slot for every token up to {e}")
        if previous_end is not None and s < previous_end:
            raise TransferInputError(f"chunk {i} [{s}, {e}) overlaps or precedes chunk {i - 1}, which ends at "
                                     f"{previous_end}: chunks must be in token order and disjoint")
        previous_end = e
    return Chunks(s_, e_)


def check_slot_mapping(slot_mapping: Any, cache: KVCache) -> int:
    """Type, rank, dtype and device of the slot mapping; returns its length."""
    if not (hasattr(slot_mapping, "dtype") and hasattr(slot_mapping, "dim")):
        raise TransferInputError(f"slot_mapping must be a 1-D integer tensor, got {type(slot_mapping).__name__}")
    if slot_mapping.dim() != 1:
        raise TransferInputError(f"slot_mapping must be 1-D (one slot per token), got shape "
                                 f"{tuple(slot_mapping.shape)}; flatten vLLM's [batch, seq] mapping first")
    if str(slot_mapping.dtype) not in INDEX_DTYPES:
        raise TransferInputError(f"slot_mapping has dtype {slot_mapping.dtype}, expected one of "
                                 f"{', '.join(INDEX_DTYPES)}")
    where = slot_mapping.device.type
    if where not in ("cpu", cache.device.type):
        raise TransferInputError(f"slot_mapping is on {slot_mapping.device}, expected the host or the KV cache's "
                                 f"device ({cache.device})")
    return int(slot_mapping.shape[0])


def check_slot_values(slot_mapping: Any, chunks: Chunks, cache: KVCache) -> None:
    """No slot in any chunk is negative or past the cache. Reads the values: host mappings, or error paths."""
    host = slot_mapping if slot_mapping.device.type == "cpu" else slot_mapping.cpu()
    for s, e in chunks.ranges():
        lo, hi = (int(v) for v in _aminmax(host[s:e]))
        if lo < 0 or hi >= cache.slots:
            bad = host[s:e]
            where = int(((bad < 0) | (bad >= cache.slots)).nonzero()[0]) + s
            raise TransferInputError(
                f"slot_mapping[{where}] = {int(host[where])} is outside the KV cache: slots must lie in "
                f"[0, {cache.slots}) ({cache.num_blocks} blocks x {cache.block_size}); a -1 (no slot) must not "
                f"fall inside the chunks [start, end) being moved")


def _aminmax(t: Any) -> tuple:
    import torch

    return torch.aminmax(t)


def check_memory_objects(tensors: Sequence, chunks: Chunks, cache: KVCache) -> None:
    """Each memory object ``[kv, L, >= end - start, hidden]``, of the cache's dtype, on the host."""
    tensors = list(tensors)
    if len(tensors) != len(chunks.starts):
        raise TransferInputError(f"{len(tensors)} memory objects for {len(chunks.starts)} chunks: one per "
                                 f"(start, end) pair is expected")
    want = f"[{cache.kv}, {cache.num_layers}, >= tokens, {cache.hidden}]"
    for i, (t, n) in enumerate(zip(tensors, chunks.lengths)):
        if t is None or not hasattr(t, "shape"):
            raise TransferInputError(f"memory object {i} has no tensor ({type(t).__name__})")
        shape = tuple(t.shape)
        if len(shape) != 4:
            raise TransferInputError(f"memory object {i} has shape {shape}, expected {want} (KV_2LTD or "
                                     f"KV_MLA_FMT)")
        if shape[0] != cache.kv:
            raise TransferInputError(f"memory object {i} holds {shape[0]} of K/V, the KV cache ({cache.layout}) "
                                     f"has {cache.kv}: shape {shape}, expected {want}")
        if shape[1] != cache.num_layers:
            raise TransferInputError(f"memory object {i} has {shape[1]} layers, the KV cache has "
                                     f"{cache.num_layers}: shape {shape}, expected {want}")
        if shape[3] != cache.hidden:
            raise TransferInputError(f"memory object {i} has hidden size {shape[3]}, the KV cache has "
                                     f"{cache.hidden}: shape {shape}, expected {want}")
        if shape[2] < n:
            raise TransferInputError(f"memory object {i} holds {shape[2]} tokens, chunk {i} "
                                     f"[{chunks.starts[i]}, {chunks.ends[i]}) has {n}")
        if t.dtype != cache.dtype:
            raise TransferInputError(f"memory object {i} has dtype {t.dtype}, the KV cache has {cache.dtype}")
        if t.device.type != "cpu":
            raise TransferInputError(f"memory object {i} is on {t.device}, expected host memory (LMCache's "
                                     f"memory objects live on the CPU)")


def validate(cache: KVCache, slot_mapping: Any, starts: Sequence, ends: Sequence,
             tensors: Sequence | None = None) -> Chunks:
    """Every host-side check, before any write; values only for a host slot mapping (see module docstring).

    Connectors call this at their entry points; ``store``/``retrieve`` call it too. Returns the
    checked chunk bounds. Raises :class:`TransferInputError`.
    """
    length = check_slot_mapping(slot_mapping, cache)
    chunks = check_chunks(starts, ends, length)
    if tensors is not None:
        check_memory_objects(tensors, chunks, cache)
    if slot_mapping.device.type == "cpu":
        check_slot_values(slot_mapping, chunks, cache)
    return chunks
