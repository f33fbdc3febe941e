"""hpu_shim.transfer.validation: each check accepts what LMCache sends and rejects the rest, saying what to fix."""

from __future__ import annotations

import pytest
import torch

from hpu_shim.transfer import validation
from hpu_shim.transfer.layouts import KVCache
from hpu_shim.transfer.validation import TransferInputError

CACHE = KVCache.from_kvcaches([(torch.zeros(8, 16, 2, 4), torch.zeros(8, 16, 2, 4))] * 3)  # 128 slots


def test_error_type_is_a_value_error():
    assert issubclass(TransferInputError, ValueError)


def test_chunks_normalize_and_merge_adjacent_ranges():
    chunks = validation.check_chunks([0, torch.tensor(10), 30], [10, 20, 35], length=40)
    assert chunks == ((0, 10, 30), (10, 20, 35)) and chunks.tokens == 25 and chunks.lengths == (10, 10, 5)
    assert chunks.ranges() == [(0, 20), (30, 35)]


@pytest.mark.parametrize("starts, ends, length, words", [
    ([0], [10, 20], None, "starts has 1 entries but ends has 2"),
    ([], [], None, "no chunks"),
    ([5], [5], None, r"chunk 0 is \[5, 5\)"),
    ([-1], [5], None, "0 <= start < end"),
    ([0], [50], 40, "only 40 entries: the slot mapping is shorter than the tokens"),
    ([0, 5], [10, 20], None, "overlaps or precedes chunk 0"),
    ([0.0], [10], None, "starts.0. must be an integer"),
    ([True], [10], None, "must be an integer"),
    (5, [10], None, "must be sequences"),
])
def test_bad_chunks(starts, ends, length, words):
    with pytest.raises(TransferInputError, match=words):
        validation.check_chunks(starts, ends, length)


@pytest.mark.parametrize("mapping, words", [
    ([1, 2, 3], "must be a 1-D integer tensor, got list"),
    (torch.zeros(2, 3, dtype=torch.long), r"must be 1-D .* got shape \(2, 3\)"),
    (torch.zeros(3), "dtype torch.float32, expected one of torch.int64, torch.int32"),
    (torch.zeros(3, dtype=torch.int16), "dtype torch.int16"),
    (torch.zeros(3, dtype=torch.long, device="meta"), "is on meta, expected the host or the KV cache's device"),
])
def test_bad_slot_mappings(mapping, words):
    with pytest.raises(TransferInputError, match=words):
        validation.check_slot_mapping(mapping, CACHE)


def test_slot_values_name_the_first_bad_position_and_its_value():
    sm = torch.arange(40)
    sm[:4] = -1  # a prefix that is not moved is fine
    validation.check_slot_values(sm, validation.check_chunks([4], [40]), CACHE)
    sm[33] = 128
    with pytest.raises(TransferInputError, match=r"slot_mapping\[33\] = 128 is outside the KV cache: .* \[0, 128\)"):
        validation.check_slot_values(sm, validation.check_chunks([4, 30], [30, 40]), CACHE)
    with pytest.raises(TransferInputError, match=r"slot_mapping\[0\] = -1"):
        validation.check_slot_values(sm, validation.check_chunks([0], [10]), CACHE)


def test_validate_checks_values_of_host_mappings_and_every_memory_object():
    sm = torch.arange(40, dtype=torch.int32)
    objs = [torch.zeros(2, 3, 20, 8), torch.zeros(2, 3, 25, 8)]
    assert validate_ok(sm, objs) == ((0, 20), (20, 40))
    with pytest.raises(TransferInputError, match="memory object 1 is on meta"):
        validation.validate(CACHE, sm, [0, 20], [20, 40], [objs[0], objs[1].to("meta")])
    with pytest.raises(TransferInputError, match="memory object 0 has no tensor"):
        validation.validate(CACHE, sm, [0, 20], [20, 40], [None, objs[1]])
    with pytest.raises(TransferInputError, match=r"memory object 0 has shape \(3, 20, 8\)"):
        validation.validate(CACHE, sm, [0, 20], [20, 40], [objs[0][0], objs[1]])


def validate_ok(sm, objs):
    return validation.validate(CACHE, sm, [0, 20], [20, 40], objs)
