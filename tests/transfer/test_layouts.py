"""hpu_shim.transfer.layouts: every layout row maps each slot to the right cache bytes; bad layouts name the fix."""

from __future__ import annotations

import pytest
import torch

from hpu_shim.transfer import layouts
from hpu_shim.transfer.layouts import KVCache, LayoutError

from . import _kv

NB, BS, H, D, L = 5, 16, 2, 8, 3

#: layout -> (name in the table, K/V count, every plane has whole-block rows, per-token rows)
EXPECTED = {
    "5d": ("lmcache 5-D [2, NB, BS, H, D]", 2, True, True),
    "flashinfer": ("flashinfer [NB, 2, BS, H, D]", 2, True, False),
    "kv": ("vllm-gaudi (K, V) [NB, BS, H, D]", 2, True, True),
    "flat": ("vllm-gaudi flat (K, V) [NB*BS, H, D]", 2, True, True),
    "mla": ("mla [NB, BS, D]", 1, True, True),
    "mla_flat": ("mla flat [NB*BS, D]", 1, True, True),
    "vllm_cpu": ("vllm-cpu [NB, H, BS, 2*D]", 2, False, False),  # a block interleaves heads: no row view
}


def _cache(layout):
    kvc = _kv.make_cache(layout, NB, BS, H, D, L, torch.bfloat16)
    mla, needs_bs, _ = _kv.LAYOUTS[layout]
    return kvc, KVCache.from_kvcaches(kvc, use_mla=mla, block_size=BS if needs_bs else None)


def _slot_major_from_planes(cache: KVCache) -> torch.Tensor:
    """Read the cache back through the planes' block views (the thing under test)."""
    out = torch.empty(cache.kv, cache.num_layers, cache.slots, cache.hidden, dtype=cache.dtype)
    for li, planes in enumerate(cache.layers):
        for p in planes:
            rows = p.blocks.reshape(cache.num_blocks, p.k, cache.block_size, -1).movedim(1, 0)
            out[p.kv0: p.kv0 + p.k, li] = rows.reshape(p.k, cache.slots, -1)
    return out


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_each_layout_maps_slots_to_the_cache_bytes(layout):
    kvc, cache = _cache(layout)
    name, kv, has_rows, has_flat = EXPECTED[layout]
    hidden = D if kv == 1 else H * D
    assert (cache.layout, cache.kv, cache.num_layers, cache.num_blocks, cache.block_size, cache.hidden) == \
        (name, kv, L, NB, BS, hidden)
    assert torch.equal(_slot_major_from_planes(cache), _kv.slot_major(kvc, layout, NB, BS))
    planes = [p for ps in cache.layers for p in ps]
    assert all((p.rows is not None) == has_rows for p in planes)
    assert all((p.flat is not None) == has_flat for p in planes)
    # the views alias the cache: a write through a plane lands in the caller's tensor
    planes[0].blocks[1, 0, 2].fill_(3)
    assert bool((_kv.slot_major(kvc, layout, NB, BS)[planes[0].kv0, 0, BS + 2] == 3).all())


def test_flat_layout_block_size_defaults_to_vllm_gaudi_128_and_checks_a_given_one():
    flat = [(torch.zeros(256, 2, 4), torch.zeros(256, 2, 4))]
    assert KVCache.from_kvcaches(flat).block_size == 128
    assert KVCache.from_kvcaches([(torch.zeros(96, 2, 4), torch.zeros(96, 2, 4))]).block_size == 1  # tokens only
    with pytest.raises(LayoutError, match="not a whole number of blocks of 48"):
        KVCache.from_kvcaches(flat, block_size=48)


@pytest.mark.parametrize("kvcaches, use_mla, hidden, words", [
    ([], False, None, "empty kvcaches"),
    ([torch.zeros(4, 16, 8)], False, None, "unsupported KV cache layout .* hpu_shim understands: mla"),
    ([torch.zeros(2, 4, 16, 2, 8), torch.zeros(2, 4, 16, 2, 4)], False, None, "layer 1 .* every layer must match"),
    ([torch.zeros(2, 4, 16, 2, 8)], False, 32, "hidden size of 16, the connector expects 32"),
    ([torch.zeros(2, 4, 2, 16, 8).transpose(2, 3)], False, None, "cannot be viewed .* without a copy"),
    ([torch.zeros(2, 4, 16, 2, 8), (torch.zeros(4, 16, 2, 8), torch.zeros(4, 16, 2, 8))], False, None,
     "layer 1 of the KV cache is not in the layout of layer 0"),
])
def test_bad_layouts_raise_layout_error_naming_the_problem(kvcaches, use_mla, hidden, words):
    with pytest.raises(LayoutError, match=words):
        KVCache.from_kvcaches(kvcaches, use_mla=use_mla, hidden=hidden)


def test_kv_cache_is_memoized_on_the_list_and_rebuilt_when_it_changes():
    kvc = _kv.make_cache("kv", NB, BS, H, D, L, torch.float16)
    first = layouts.kv_cache(kvc)
    assert layouts.kv_cache(kvc) is first
    other = list(kvc)
    assert layouts.kv_cache(other) is not first
    kvc[0] = (torch.zeros(NB, BS, H, D, dtype=torch.float16), kvc[0][1])  # vLLM re-allocated layer 0
    assert layouts.kv_cache(kvc) is not first
    for _ in range(10):
        layouts.kv_cache(list(kvc))
    assert len(layouts._memo) <= 4  # bounded: the memo references at most 4 caches
