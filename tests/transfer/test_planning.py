"""hpu_shim.transfer.planning: whole blocks where the slots allow, the device verdict, bucket padding."""

from __future__ import annotations

import torch

from hpu_shim.transfer import planning
from hpu_shim.transfer.device import facts
from hpu_shim.transfer.layouts import KVCache
from hpu_shim.transfer.planning import NOT_BLOCKS, OK, RANGE_BAD, Segment
from hpu_shim.transfer.validation import check_chunks

BS, NB = 16, 10
CACHE = KVCache.from_kvcaches([(torch.zeros(NB, BS, 1, 4), torch.zeros(NB, BS, 1, 4))])
CPU = facts(torch.device("cpu"))
LAZY = CPU._replace(lazy=True)


def _blocks(*ids):
    return (torch.tensor(ids)[:, None] * BS + torch.arange(BS)).flatten()


def test_bucket_pads_at_most_25_percent_with_log_many_sizes():
    sizes = {planning.bucket(n) for n in range(1, 1 << 17)}
    assert len(sizes) <= 4 * 17
    for n in list(range(1, 5000)) + [131071, 131072, 131073]:
        b = planning.bucket(n)
        assert b >= n and (n <= 16 or b <= 1.25 * n)


def test_host_plan_whole_blocks_then_tails():
    sm = _blocks(7, 2, 3, 9)
    plan = planning.host_plan(sm, check_chunks([0, 32], [32, 60]), CACHE)
    assert plan.body.tolist() == [7, 2, 3] and plan.tail.tolist() == sm[48:60].tolist()
    assert plan.segments == (Segment(0, 0, False, 0, 32), Segment(1, 0, False, 32, 16), Segment(1, 16, True, 0, 12))
    assert plan.verdict is None


def test_host_plan_sends_a_block_with_a_hole_and_unaligned_chunks_token_by_token():
    sm = _blocks(1, 2, 3)
    sm[20] = 150  # block 2 of the request is not one run
    plan = planning.host_plan(sm, check_chunks([0], [48]), CACHE)
    assert plan.body.tolist() == [1, 3] and plan.tail.tolist() == sm[16:32].tolist()
    assert [s.tail for s in plan.segments] == [False, True, False]
    unaligned = planning.host_plan(_blocks(1, 2), check_chunks([5], [30]), CACHE)
    assert unaligned.m == 0 and unaligned.tail.tolist() == _blocks(1, 2)[5:30].tolist()


def test_device_plan_derives_block_ids_and_a_verdict_without_reading_values():
    sm = _blocks(4, 5, 8)
    plan = planning.device_plan(sm, check_chunks([0, 16], [16, 40]), CACHE, CPU)
    assert plan.body.tolist() == [4, 5] and plan.tail.tolist() == sm[32:40].tolist()
    assert plan.verdict.tolist() == [OK] and plan.segments[-1] == Segment(1, 16, True, 0, 8)


def test_device_verdict_flags_holes_misaligned_runs_and_slots_outside_the_cache():
    chunks = check_chunks([0], [48])
    holes = _blocks(1, 2, 3)
    holes[20] = 150
    shifted = _blocks(1, 2, 3) + 1  # contiguous, but not starting at a block boundary
    outside = _blocks(1, 2, 3)
    outside[47] = NB * BS
    negative = _blocks(1, 2, 3)
    negative[3] = -1
    both = holes.clone()
    both[0] = -5
    cases = ((holes, NOT_BLOCKS), (shifted, NOT_BLOCKS), (_blocks(1, 2, NB), RANGE_BAD), (_blocks(-1, 2, 3), RANGE_BAD),
             (outside, RANGE_BAD | NOT_BLOCKS), (negative, RANGE_BAD | NOT_BLOCKS), (both, RANGE_BAD | NOT_BLOCKS))
    for sm, code in cases:
        plan = planning.device_plan(sm, chunks, CACHE, CPU)
        assert plan.verdict.tolist() == [code], (sm, code)
        assert int(plan.body.min()) >= 0 and int(plan.body.max()) < NB  # clamped: never out of bounds
        assert plan.t == 0 or (int(plan.tail.min()) >= 0 and int(plan.tail.max()) < NB * BS)


def test_chunks_not_at_block_starts_plan_tokens_with_a_range_verdict():
    sm = _blocks(1, 2)
    plan = planning.device_plan(sm, check_chunks([3], [20]), CACHE, CPU)
    assert plan.m == 0 and plan.tail.tolist() == sm[3:20].tolist() and plan.verdict.tolist() == [OK]


def test_lazy_mode_pads_to_buckets_by_repeating_the_last_entry_eager_does_not():
    sm = _blocks(*range(9))[:140]
    plan = planning.host_plan(sm, check_chunks([0], [140]), CACHE)
    _, tail, mb, tb = planning.pad(plan, LAZY, torch.device("cpu"))
    assert (plan.m, plan.t, mb, tb) == (8, 12, 8, 16)
    assert tail.tolist() == sm[128:140].tolist() + [int(sm[139])] * 4
    eager = planning.pad(plan, CPU, torch.device("cpu"))
    assert (eager[2], eager[3]) == (8, 12) and torch.equal(eager[1], plan.tail)


def test_padded_signatures_grow_with_the_log_of_the_prompt_length():
    """(body bucket, tail bucket) is what a lazy transfer graph's shapes depend on: over 64 prompt lengths
    100..128K (chunks at block starts, so every tail is shorter than a block) at most 4 per octave + 4.
    Tails bucketed on their own made nearly every length a new pair (58 of 64)."""
    import math

    bs = 128
    lengths = sorted({round(100 * (131072 / 100) ** (i / 63)) for i in range(64)})
    pairs = {(planning.bucket(n // bs, minimum=4) if n // bs else 0, planning.tail_bucket(n % bs, bs))
             for n in lengths}
    assert len(pairs) <= 4 * math.ceil(math.log2(lengths[-1] / lengths[0])) + 4
    assert {planning.tail_bucket(t, bs) for t in range(1, bs + 1)} == {bs}
    assert planning.tail_bucket(0, bs) == 0 and planning.tail_bucket(bs + 1, bs) == planning.bucket(bs + 1)
