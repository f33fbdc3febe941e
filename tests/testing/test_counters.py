"""The counter contract (hpu_shim.testing._counters): names other code asserts on, reset, deltas."""

import pytest

import hpu_shim.testing as hpu_testing
from hpu_shim.testing import _counters

#: The names the shim's other tests and benchmarks use (docs/gaudi-semantics.md "Counters").
CONTRACT = {
    "mark_step_calls", "synchronize_calls", "stream_synchronize_calls", "event_synchronize_calls",
    "h2d_bytes", "h2d_copies", "d2h_bytes", "d2h_copies", "hpu_ops", "graph_flushes", "graph_compiles",
    "distinct_graphs", "blocking_d2h_copies", "bounce_buffer_bytes", "host_memcpy_bytes",
    "int64_host_casts", "int64_host_cast_bytes", "cpu_fallbacks", "float64_downcasts", "eager_compiles",
    "event_record_flushes",
}


def test_contract_names_exist_and_are_documented():
    assert set(hpu_testing.ALL_FIELDS) == CONTRACT
    assert set(hpu_testing.counters()) == CONTRACT
    assert set(hpu_testing.COUNTER_DOCS) | {"distinct_graphs"} == CONTRACT
    assert all(doc.strip() for doc in hpu_testing.COUNTER_DOCS.values())


@pytest.mark.parametrize("field", sorted(_counters.COUNTER_FIELDS))
def test_every_counter_is_resettable_and_in_deltas(field):
    hpu_testing.reset_counters()
    with hpu_testing.count() as c:
        _counters.bump(field, 3)
        assert getattr(c, field) == 3
    assert hpu_testing.counters()[field] == 3 and c.as_dict()[field] == 3
    hpu_testing.reset_counters()
    assert hpu_testing.counters()[field] == 0
    assert c.as_dict()[field] == 3  # frozen after the block


def test_eager_compile_cache_is_process_wide():
    hpu_testing.reset_counters()
    hpu_testing.clear_graph_cache()
    key = ("aten::add.Tensor", ("torch.float32", "torch.float32"), (1, 1))
    assert _counters.eager_compile(key) and not _counters.eager_compile(key)
    assert hpu_testing.counters()["eager_compiles"] == 1
    hpu_testing.reset_counters()  # counters go, compiled ops stay (like a recipe cache)
    assert not _counters.eager_compile(key) and hpu_testing.counters()["eager_compiles"] == 0
    hpu_testing.clear_graph_cache()
    assert _counters.eager_compile(key) and hpu_testing.counters()["eager_compiles"] == 1


def test_lazy_graph_cache_and_distinct_graphs():
    hpu_testing.reset_counters()
    hpu_testing.clear_graph_cache()
    epoch = _counters.graph_epoch()
    for sig in ("a", "b", "a"):
        _counters.record_op((sig,))
        assert _counters.flush()
    assert not _counters.flush()  # nothing pending: no graph
    assert _counters.graph_epoch() != epoch
    snap = hpu_testing.counters()
    assert (snap["graph_flushes"], snap["graph_compiles"], snap["distinct_graphs"]) == (3, 2, 2)
