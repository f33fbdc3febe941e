"""hpu_shim.compat.guards: which stored chunks fit this KV cache, and one WARNING per cause.

End to end (another model's chunks in a real store, real LMCache on the emulated HPU) is
``tests/test_faults.py``; the chunk's effect on the retrieve is ``tests/compat/test_retrieve.py``.
"""

from __future__ import annotations

import logging
import types

import pytest
import torch

from hpu_shim.compat import guards


def engine(layers=4, heads=2, head_size=32, dtype=torch.bfloat16, mla=False):
    meta = types.SimpleNamespace(kv_shape=(layers, 1 if mla else 2, 256, 1 if mla else heads, head_size),
                                 kv_dtype=dtype, use_mla=mla)
    return types.SimpleNamespace(metadata=meta)


class Obj:
    def __init__(self, shape=(2, 4, 256, 64), dtype=torch.bfloat16, fmt="KV_2LTD"):
        self.shape, self.dtype, self.fmt = shape, dtype, types.SimpleNamespace(name=fmt)

    def get_shape(self):
        return torch.Size(self.shape)

    def get_dtype(self):
        return self.dtype

    def get_memory_format(self):
        return self.fmt


@pytest.mark.parametrize("obj, cause, got, want", [
    (Obj(fmt="KV_T2D"), "format", "KV_T2D", "KV_2LTD"),
    (Obj(dtype=torch.float16), "dtype", torch.float16, torch.bfloat16),
    (Obj(shape=(1, 4, 256, 64)), "kv planes", 1, 2),
    (Obj(shape=(2, 6, 256, 64)), "layers", 6, 4),
    (Obj(shape=(2, 2, 256, 64)), "layers", 2, 4),
    (Obj(shape=(2, 4, 256, 128)), "hidden size", 128, 64),
    (Obj(shape=(2, 4, 100, 64)), "tokens", 100, 256),
])
def test_each_mismatch_names_its_cause(obj, cause, got, want):
    assert guards.check(engine(), obj, (0, 256)) == (cause, got, want)


def test_a_fitting_chunk_passes_also_a_short_last_one():
    assert guards.check(engine(), Obj(), (0, 256)) is None
    assert guards.check(engine(), Obj(shape=(2, 4, 100, 64)), (256, 356)) is None
    assert guards.check(engine(), Obj(), None) is None


def test_mla():
    mla = engine(heads=1, head_size=576, mla=True)
    assert guards.check(mla, Obj(shape=(1, 4, 256, 576), fmt="KV_MLA_FMT"), (0, 256)) is None
    assert guards.check(mla, Obj(shape=(2, 4, 256, 64)), (0, 256))[0] == "format"


def test_an_engine_without_metadata_checks_nothing():
    assert guards.check(types.SimpleNamespace(), Obj(shape=(2, 9, 1, 1)), (0, 256)) is None


def test_one_warning_per_engine_and_cause(caplog):
    eng, other = engine(), engine()
    key = types.SimpleNamespace(to_string=lambda: "vllm@model@1@0@abc")
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        for _ in range(3):
            guards.reject(eng, key, "layers", 6, 4)
        guards.reject(eng, key, "format", "KV_T2D", "KV_2LTD")
        guards.reject(other, key, "layers", 6, 4)
    messages = [r.getMessage() for r in caplog.records if r.name == "hpu_shim"]
    assert len(messages) == 3
    assert "vllm@model@1@0@abc" in messages[0] and "6 layers" in messages[0] and "miss" in messages[0]
    assert "KV_T2D: LMCache's layerwise CUDA format" in messages[1] and "use_layerwise: false" in messages[1]
    assert eng._hpu_shim_guard_warned == {"layers": 3, "format": 1}


def test_short_chunks_are_the_only_ones_that_need_their_token_range():
    assert not guards.short(engine(), Obj())
    assert guards.short(engine(), Obj(shape=(2, 4, 100, 64)))
