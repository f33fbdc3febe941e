"""What tests/transfer checks on the emulated HPU, run inside a child that installed the emulator.

``run_all`` returns plain data (results travel through ``hpu_shim.testing.results``): property
cases, counters per batched call at 4K/32K/128K tokens, the forced per-token fallback, a slot
outside the cache, and a negative control. The layer count and head size are small because the
counts do not depend on them (``payload_bytes`` states what each call moved).
"""

from __future__ import annotations

import torch

from hpu_shim import testing, transfer
from hpu_shim.transfer import planning

from . import _kv

HPU_LAYOUTS = ("5d", "flashinfer", "kv", "flat", "mla", "mla_flat", "vllm_cpu")


def _counts(delta) -> dict:
    return delta.as_dict()


def property_cases(n: int) -> tuple[int, list]:
    failures, count = [], 0
    for seed in range(n):
        case = _kv.seeded_case(1000 + seed, layouts=HPU_LAYOUTS)
        for on_device in (True, False):
            count += 1
            problems = _kv.roundtrip(case, "hpu", slots_on_device=on_device)
            if problems:
                failures.append(f"{case} slots_on_device={on_device}: {problems}")
    return count, failures


def syncs(tokens: int) -> dict:
    """A vLLM-style batched store and retrieve of ``tokens`` tokens (chunks of 256), slot mapping on the device."""
    bs, chunk = 128, 256
    case = _kv.Case("kv", "bfloat16", bs, tokens // bs + 8, 1, 8, 2, "vllm", tokens, 0, chunk, (), 7)
    kvc = case.cache("hpu")
    cache = transfer.kv_cache(kvc)
    sm = case.slot_mapping()
    starts, ends = case.chunks()
    outs = [torch.zeros(2, case.layers, chunk, cache.hidden, dtype=torch.bfloat16) for _ in starts]
    sm_dev = sm.to("hpu")
    with testing.count() as store:
        transfer.store(cache, sm_dev, starts, ends, outs)
    before = _kv.slot_major(kvc, "kv", case.nb, bs)
    exact = all(torch.equal(o[:, :, : e - s], before[:, :, sm[s:e]]) for o, s, e in zip(outs, starts, ends))
    for t in _kv.tensors_of(kvc):
        t.zero_()
    with testing.count() as retrieve:
        transfer.retrieve(cache, outs, sm_dev, starts, ends)
    after = _kv.slot_major(kvc, "kv", case.nb, bs)
    exact = exact and torch.equal(after[:, :, sm], before[:, :, sm])
    untouched = torch.ones(case.nb * bs, dtype=torch.bool)
    untouched[sm] = False
    exact = exact and not after[:, :, untouched].any()
    payload = 2 * case.layers * tokens * cache.hidden * 2
    return {"exact": bool(exact), "payload_bytes": payload, "store": _counts(store), "retrieve": _counts(retrieve)}


def fallback() -> dict:
    """Holes in a device slot mapping: the block assumption fails on the device, the call is redone per token."""
    case = _kv.Case("kv", "bfloat16", 16, 12, 2, 8, 2, "holes", 150, 0, 64, (), 11)
    with testing.count() as c:
        problems = _kv.roundtrip(case, "hpu")
    kvc = case.cache("hpu")
    cache = transfer.kv_cache(kvc)
    sm = case.slot_mapping().to("hpu")
    starts, ends = case.chunks()
    outs = [torch.zeros(2, 2, 64, cache.hidden, dtype=torch.bfloat16) for _ in starts]
    with testing.count() as store:
        transfer.store(cache, sm, starts, ends, outs)
    with testing.count() as retrieve:
        transfer.retrieve(cache, outs, sm, starts, ends)
    return {"problems": problems, "both": _counts(c), "store": _counts(store), "retrieve": _counts(retrieve)}


def range_error() -> dict:
    out = {}
    for direction in ("store", "retrieve"):
        case = _kv.Case("kv", "bfloat16", 16, 12, 2, 8, 2, "vllm", 150, 0, 64, (), 12)
        kvc = case.cache("hpu")
        cache = transfer.kv_cache(kvc)
        sm = case.slot_mapping()
        sm[70] = case.nb * case.bs + 3
        starts, ends = case.chunks()
        objs = [torch.full((2, 2, 64, cache.hidden), 5, dtype=torch.bfloat16) for _ in starts]
        before = _kv.slot_major(kvc, "kv", case.nb, case.bs)
        before_objs = [o.clone() for o in objs]
        error = ""
        try:
            if direction == "store":
                transfer.store(cache, sm.to("hpu"), starts, ends, objs)
            else:
                transfer.retrieve(cache, objs, sm.to("hpu"), starts, ends)
        except transfer.TransferInputError as exc:
            error = str(exc)
        out[direction] = {
            "error": error,
            "cache_untouched": torch.equal(_kv.slot_major(kvc, "kv", case.nb, case.bs), before),
            "objects_untouched": all(torch.equal(a, b) for a, b in zip(objs, before_objs)),
        }
    return out


def negative_control() -> list:
    """Block ids off by one on the device: the round-trip check must notice."""
    real = planning.device_plan

    def off_by_one(slot_mapping, chunks, cache, facts):
        plan = real(slot_mapping, chunks, cache, facts)
        return plan._replace(body=(plan.body + 1) % cache.num_blocks)

    from hpu_shim.transfer import kernels

    kernels.device_plan = off_by_one
    try:
        return _kv.roundtrip(_kv.Case("kv", "float16", 16, 12, 2, 8, 2, "fresh", 96, 0, 32, (), 13), "hpu")
    finally:
        kernels.device_plan = real


def rounds() -> dict:
    """A call larger than the staging bound moves in rounds of whole chunks, still exact; nothing above it is kept."""
    from hpu_shim.transfer import kernels, staging

    case = _kv.Case("kv", "bfloat16", 16, 40, 2, 8, 2, "vllm", 512, 0, 64, (), 14)
    old = staging.LIMIT
    staging.set_limit(48 * 1024)  # a 64-token chunk stages 16 KiB here (2 x 2 layers x 64 x 16 x 2 bytes)
    try:
        starts, ends = case.chunks()
        cache = transfer.kv_cache(case.cache("hpu"))
        sm = case.slot_mapping().to("hpu")
        planned = len(kernels._rounds(cache, transfer.validate(cache, sm, starts, ends), list(starts)))
        outs = [torch.zeros(2, 2, 64, cache.hidden, dtype=torch.bfloat16) for _ in starts]
        with testing.count() as c:
            transfer.store(cache, sm, starts, ends, outs)
        problems = _kv.roundtrip(case, "hpu")
        return {"problems": problems, "rounds": planned, "blocking_d2h": c.blocking_d2h_copies,
                "retained": staging.retained_bytes(), "limit": staging.LIMIT}
    finally:
        staging.set_limit(old)


def mixed_words() -> dict:
    """K takes the int32 row view, V (at an odd element offset in its storage) cannot: both still move exactly."""
    from hpu_shim.testing._vllm_gaudi import TensorTuple
    from hpu_shim.transfer import kernels

    nb, bs, heads, dim, layers = 12, 16, 2, 8, 2
    g = torch.Generator().manual_seed(21)
    kv = []
    for _ in range(layers):
        k = torch.randint(-999, 999, (nb, bs, heads, dim), generator=g).to(torch.bfloat16).to("hpu")
        big = torch.randint(-999, 999, (1 + nb * bs * heads * dim,), generator=g).to(torch.bfloat16).to("hpu")
        kv.append(TensorTuple((k, big[1:].view(nb, bs, heads, dim))))
    cache = transfer.kv_cache(kv)
    views, _, _ = kernels._device_rows(cache)
    dtypes = sorted({str(v.dtype) for kvs in views for v in kvs if v is not None})
    ids = torch.tensor([7, 2, 9, 4])
    sm = (ids[:, None] * bs + torch.arange(bs)).flatten()
    starts, ends = [0, 32], [32, 64]
    before = [[t.cpu().clone() for t in layer] for layer in kv]
    outs = [torch.zeros(2, layers, 32, heads * dim, dtype=torch.bfloat16) for _ in starts]
    transfer.store(cache, sm.to("hpu"), starts, ends, outs)
    for layer in kv:
        for t in layer:
            t.zero_()
    transfer.retrieve(cache, outs, sm.to("hpu"), starts, ends)
    exact = True
    for layer, ref in zip(kv, before):
        for t, r in zip(layer, ref):
            got = t.cpu()
            exact = exact and torch.equal(got[ids], r[ids])
            rest = torch.ones(nb, dtype=torch.bool)
            rest[ids] = False
            exact = exact and not got[rest].any()
    return {"row_dtypes": dtypes, "exact": bool(exact)}


def run_all(n: int) -> dict:
    count, failures = property_cases(n)
    return {
        "property_cases": count,
        "property_failures": failures,
        "syncs": {str(t): syncs(t) for t in (4096, 32768, 131072)},
        "fallback": fallback(),
        "range_error": range_error(),
        "negative_control": negative_control(),
        "rounds": rounds(),
        "mixed_words": mixed_words(),
        "lazy": testing.is_lazy(),
    }
