"""hpu_shim.transfer.kernels: store/retrieve bit-exact with nothing written elsewhere, on the CPU and the emulated HPU.

Property tests draw layouts, dtypes, block sizes 16-256, chunkings, prefixes, dropped chunks and
slot mappings (vLLM free-queue order, fresh requests, random, with holes) through hypothesis with a
fixed derandomized seed; each case prints as a ``Case(...)`` that replays it. The emulated HPU runs
in fresh interpreters (it cannot be uninstalled), once per mode, and reports through a result file.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import REPO, run_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpu_shim import transfer
from hpu_shim.transfer import kernels, planning

from . import _kv

SETTINGS = settings(max_examples=120, derandomize=True, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _draw(data):
    return _kv.draw_case(lambda options: data.draw(st.sampled_from(options)),
                         lambda lo, hi: data.draw(st.integers(lo, hi)))


@SETTINGS
@given(st.data())
def test_roundtrip_is_exact_and_writes_nothing_else_on_cpu(data):
    case = _draw(data)
    assert _kv.roundtrip(case) == [], case


def test_negative_control_a_wrong_block_is_caught(monkeypatch):
    """The checks above see a transfer that moves the wrong block."""
    real = planning.host_plan

    def off_by_one_block(*args):
        plan = real(*args)
        return plan._replace(body=(plan.body + 1) % args[2].num_blocks)

    monkeypatch.setattr(kernels, "host_plan", off_by_one_block)
    case = _kv.Case("kv", "bfloat16", 16, 8, 2, 8, 2, "fresh", 64, 0, 32, (), 5)
    problems = _kv.roundtrip(case)
    assert any("store" in p for p in problems) and any("retrieve" in p for p in problems), problems


def test_negative_control_a_corrupted_memory_object_is_caught():
    case = _kv.Case("vllm_cpu", "float16", 16, 8, 2, 8, 2, "vllm", 64, 0, 32, (), 6)

    def flip(outs):
        outs[0][0, 0, 3, 1] += 1

    assert any("differs" in p for p in _kv.roundtrip(case, corrupt=flip))


def test_vllm_cpu_fresh_request_moves_each_chunk_as_one_run(monkeypatch):
    """vLLM-CPU blocks that are consecutive move as one strided copy per (chunk, layer), not per block."""
    case = _kv.Case("vllm_cpu", "bfloat16", 16, 40, 2, 8, 3, "fresh", 512, 0, 256, (), 1)
    calls = []
    real = kernels._runs
    monkeypatch.setattr(kernels, "_runs", lambda ids: calls.append(r := real(ids)) or r)
    assert _kv.roundtrip(case) == []
    assert calls and all(len(r) == 1 and r[0][2] == 16 for r in calls), calls


# -- malformed inputs: one error type, a message that says what to fix, nothing written ---------------------

def _setup():
    case = _kv.Case("kv", "bfloat16", 16, 8, 2, 8, 2, "fresh", 64, 0, 32, (), 3)
    kvc = case.cache()
    cache = transfer.kv_cache(kvc)
    sm = case.slot_mapping()
    objs = [torch.full((2, 2, 32, 16), 7, dtype=torch.bfloat16) for _ in range(2)]
    return kvc, cache, sm, objs


def _bad_slot(sm, value):
    sm = sm.clone()
    sm[40] = value
    return sm


#: (what, change(cache, sm, objs) -> (sm, starts, ends, objs), words the message must contain)
MALFORMED = [
    ("short slot mapping", lambda c, sm, o: (sm[:50], [0, 32], [32, 64], o), "shorter than the tokens"),
    ("slot past the cache", lambda c, sm, o: (_bad_slot(sm, 8 * 16), [0, 32], [32, 64], o), "outside the KV cache"),
    ("negative slot", lambda c, sm, o: (_bad_slot(sm, -1), [0, 32], [32, 64], o), "outside the KV cache"),
    ("float slot mapping", lambda c, sm, o: (sm.float(), [0, 32], [32, 64], o), "dtype torch.float32"),
    ("2-D slot mapping", lambda c, sm, o: (sm.view(2, 32), [0, 32], [32, 64], o), "must be 1-D"),
    ("object dtype", lambda c, sm, o: (sm, [0, 32], [32, 64], [o[0].half(), o[1]]), "dtype torch.float16"),
    ("object layers", lambda c, sm, o: (sm, [0, 32], [32, 64], [o[0][:, :1], o[1]]), "1 layers"),
    ("object hidden", lambda c, sm, o: (sm, [0, 32], [32, 64], [o[0][..., :8], o[1]]), "hidden size 8"),
    ("object too small", lambda c, sm, o: (sm, [0, 32], [32, 64], [o[0][:, :, :20], o[1]]), "holds 20 tokens"),
    ("object K/V count", lambda c, sm, o: (sm, [0, 32], [32, 64], [o[0][:1], o[1]]), "1 of K/V"),
    ("objects vs chunks", lambda c, sm, o: (sm, [0, 32], [32, 64], o[:1]), "1 memory objects for 2 chunks"),
    ("starts vs ends", lambda c, sm, o: (sm, [0, 32], [32], o), "starts has 2 entries but ends has 1"),
    ("empty chunk", lambda c, sm, o: (sm, [0, 32], [32, 32], o), "0 <= start < end"),
    ("overlapping chunks", lambda c, sm, o: (sm, [0, 16], [32, 48], o), "overlaps"),
    ("float bound", lambda c, sm, o: (sm, [0, 32.0], [32, 64], o), "must be an integer"),
]


@pytest.mark.parametrize("direction", ["store", "retrieve"])
@pytest.mark.parametrize("what, change, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_raises_and_writes_nothing(direction, what, change, words):
    kvc, cache, sm, objs = _setup()
    sm, starts, ends, objs = change(cache, sm, objs)
    before = [t.clone() for t in _kv.tensors_of(kvc)]
    before_objs = [o.clone() for o in objs]
    with pytest.raises(transfer.TransferInputError, match=words):
        if direction == "store":
            transfer.store(cache, sm, starts, ends, objs)
        else:
            transfer.retrieve(cache, objs, sm, starts, ends)
    assert all(torch.equal(a, b) for a, b in zip(_kv.tensors_of(kvc), before))
    assert all(torch.equal(a, b) for a, b in zip(objs, before_objs))


# -- the emulated HPU, eager and lazy ------------------------------------------------------------------------

CHILD = """
import sys
import torch
from hpu_shim import testing
from hpu_shim.testing import results
testing.install_emulator()
from transfer import emulated
results.emit(emulated.run_all(8))
"""


@pytest.fixture(scope="module", params=["eager", "lazy"])
def emulated_results(request):
    env = {"PT_HPU_LAZY_MODE": "1" if request.param == "lazy" else "0", "PT_HPU_PLACE_ON_CPU": "none"}
    proc = run_py(CHILD, path=[REPO / "tests"], env=env, timeout=900)
    assert proc.results, f"the child reported nothing\n{proc.stderr[-3000:]}"
    return request.param, proc.results[-1]


def test_emulated_property_cases_are_exact(emulated_results):
    mode, r = emulated_results
    assert r["property_failures"] == [], (mode, r["property_failures"])
    assert r["property_cases"] >= 16


@pytest.mark.parametrize("tokens", [4096, 32768, 131072])
@pytest.mark.parametrize("direction", ["store", "retrieve"])
def test_emulated_syncs_per_batched_call(emulated_results, tokens, direction):
    """One device sync per call at any size; <= 2 mark_step in lazy mode and none in eager mode."""
    mode, r = emulated_results
    got = r["syncs"][str(tokens)]
    assert got["exact"], got
    c = got[direction]
    assert c["stream_synchronize_calls"] == c["event_synchronize_calls"] == 0, c
    if direction == "store":
        assert (c["blocking_d2h_copies"], c["synchronize_calls"]) == (1, 0), c
    else:
        assert (c["blocking_d2h_copies"], c["synchronize_calls"]) == (0, 1), c
    assert c["mark_step_calls"] == ((1 if direction == "store" else 2) if mode == "lazy" else 0), c
    assert c["cpu_fallbacks"] == c["float64_downcasts"] == c["int64_host_casts"] == 0, c
    touched = c["h2d_bytes"] + c["d2h_bytes"] + c["bounce_buffer_bytes"] + c["host_memcpy_bytes"]
    assert touched <= 1.25 * got["payload_bytes"], (touched, got["payload_bytes"], c)


def test_emulated_forced_fallback_redoes_the_call_per_token(emulated_results):
    """A device slot mapping that is not whole blocks: the device verdict fails, the call is redone exactly."""
    _, r = emulated_results
    f = r["fallback"]
    assert f["problems"] == [], f
    assert f["store"]["blocking_d2h_copies"] == 2 and f["retrieve"]["synchronize_calls"] == 2, f


def test_emulated_slot_outside_the_cache_raises_and_writes_nothing(emulated_results):
    _, r = emulated_results
    for direction in ("store", "retrieve"):
        e = r["range_error"][direction]
        assert "outside the KV cache" in e["error"], e
        assert e["cache_untouched"] and e["objects_untouched"], e


def test_emulated_negative_control_is_caught(emulated_results):
    _, r = emulated_results
    assert any("differs" in p for p in r["negative_control"]), r["negative_control"]


def test_emulated_calls_above_the_staging_bound_move_in_rounds(emulated_results):
    _, r = emulated_results
    f = r["rounds"]
    assert f["problems"] == [] and f["rounds"] > 1 and f["blocking_d2h"] == f["rounds"], f
    assert f["retained"] <= f["limit"], f


def test_emulated_planes_with_and_without_the_word_view_move_exactly(emulated_results):
    """One plane at an odd element offset cannot be viewed as int32 rows: the per-plane views still pair up."""
    _, r = emulated_results
    m = r["mixed_words"]
    assert m["row_dtypes"] == ["torch.bfloat16", "torch.int32"] and m["exact"], m
