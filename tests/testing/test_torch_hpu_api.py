"""The fake torch.hpu module (hpu_shim.testing._torch_hpu): the API shape of habana_frameworks.torch.hpu
and the bridge's event/stream semantics (docs/gaudi-semantics.md "torch.hpu API", "Events and streams")."""

import pytest
import torch

import hpu_shim.testing as hpu_testing

STATS_KEYS = {"Limit", "InUse", "MaxInUse", "NumAllocs", "NumFrees", "ActiveAllocs",
              "MaxAllocSize", "TotalSystemAllocs", "TotalSystemFrees", "TotalActiveAllocs"}


def test_single_device(emulated_hpu):
    hpu = torch.hpu
    assert hpu is emulated_hpu.torch_hpu
    assert hpu.is_available() and hpu.device_count() == 1 and hpu.current_device() == 0
    assert hpu.is_initialized()
    hpu.set_device(0)
    hpu.set_device("hpu:0")
    with pytest.raises(AssertionError, match="one device per process"):
        hpu.set_device(1)
    with hpu.device(0):
        pass
    with pytest.raises(AssertionError):
        hpu.device(1)
    with hpu.device_of(torch.ones(1, device="hpu")) as ctx:
        assert ctx.idx == 0


def test_synchronize_takes_no_argument(emulated_hpu):
    torch.hpu.synchronize()
    with pytest.raises(TypeError):
        torch.hpu.synchronize(0)
    with pytest.raises(TypeError):
        torch.hpu.synchronize(device="hpu")
    assert emulated_hpu.counters()["synchronize_calls"] == 1


def test_stream_shape(emulated_hpu):
    hpu = torch.hpu
    s = hpu.Stream()
    s2 = hpu.Stream(device="hpu", priority=-1)  # both accepted and unused
    assert s.stream_id != s2.stream_id and s.device_index == 0
    assert hasattr(s, "device_type")
    assert not hasattr(s, "cuda_stream")
    assert not hasattr(hpu.Stream, "priority_range")
    for name in ("wait_event", "wait_stream", "record_event", "query", "synchronize"):
        assert callable(getattr(s, name))
    assert hpu.default_stream().stream_id == 0
    assert hpu.current_stream() == hpu.default_stream()
    with hpu.stream(s):
        assert hpu.current_stream() == s
        with hpu.stream(None):  # no-op
            assert hpu.current_stream() == s
    assert hpu.current_stream() == hpu.default_stream()
    with hpu.StreamContext(s2):
        assert hpu.current_stream() is s2
    hpu.set_stream(s)
    assert hpu.current_stream() is s
    hpu.set_stream(None)
    assert hpu.current_stream() is s
    hpu.set_stream(hpu.default_stream())
    hpu.synchronize()  # nothing in flight: queries are True
    ev = s.record_event()
    assert isinstance(ev, hpu.Event) and ev.query() and s.query()
    s.wait_event(ev)
    s.wait_stream(s2)
    s.synchronize()
    assert emulated_hpu.counters()["stream_synchronize_calls"] == 1


def test_event_shape(emulated_hpu):
    hpu = torch.hpu
    with pytest.raises(TypeError):
        hpu.Event(blocking=True)
    with pytest.raises(TypeError):
        hpu.Event(interprocess=True)
    assert not hasattr(hpu.Event, "ipc_handle") and not hasattr(hpu.Event, "from_ipc_handle")
    start, end = hpu.Event(enable_timing=True), hpu.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded"):
        start.elapsed_time(end)
    hpu.synchronize()
    start.record()
    end.record(hpu.current_stream())
    assert end.query() and start.elapsed_time(end) >= 0
    with pytest.raises(RuntimeError, match="enable_timing"):
        hpu.Event().elapsed_time(end)
    end.wait()
    end.synchronize()
    assert emulated_hpu.counters()["event_synchronize_calls"] == 1


def test_device_info_strings(emulated_hpu):
    hpu = torch.hpu
    assert "GAUDI" in hpu.get_device_name() and "emulated" in hpu.get_device_name()
    props = hpu.get_device_properties(0)
    assert isinstance(props, str) and not hasattr(props, "total_memory")
    assert isinstance(hpu.get_device_capability(), str)
    assert hpu.is_bf16_supported()
    assert hpu.get_arch_list() == [hpu.get_device_name()]
    assert isinstance(hpu.utilization(), int) and isinstance(hpu.memory_usage(), int)
    with pytest.raises(AssertionError):
        hpu.can_device_access_peer(0, 0)


def test_memory_api(emulated_hpu):
    hpu = torch.hpu
    stats = hpu.memory_stats()
    assert list(stats) == ["Limit", "InUse", "MaxInUse", "NumAllocs", "NumFrees", "ActiveAllocs",
                           "MaxAllocSize", "TotalSystemAllocs", "TotalSystemFrees", "TotalActiveAllocs"]
    assert set(stats) == STATS_KEYS
    keep = torch.empty(1000, dtype=torch.uint8, device="hpu")
    stats = hpu.memory_stats()
    assert hpu.memory_allocated() == stats["InUse"] >= 1000
    assert hpu.max_memory_allocated() == stats["MaxInUse"]
    assert hpu.memory_reserved() == hpu.max_memory_reserved() == stats["Limit"]
    assert hpu.mem_get_info() == (stats["Limit"] - stats["InUse"], stats["Limit"])
    hpu.reset_peak_memory_stats()
    assert hpu.max_memory_allocated() == hpu.memory_allocated()
    hpu.reset_accumulated_memory_stats()
    assert hpu.memory_stats()["NumAllocs"] == 0
    assert "InUse" in hpu.memory_summary()
    assert not hasattr(hpu, "empty_cache")  # absent from habana_frameworks.torch.hpu (torch.hpu API)
    with pytest.raises(AttributeError):
        hpu.empty_cache()
    del keep


def test_rng_api(emulated_hpu):
    hpu = torch.hpu
    hpu.manual_seed(7)
    assert hpu.initial_seed() == 7
    hpu.manual_seed_all(8)
    assert hpu.initial_seed() == 8
    hpu.seed()
    state = hpu.get_rng_state()
    assert state.dtype == torch.uint8 and state.device.type == "cpu"
    hpu.set_rng_state(state)


def test_counters_transfer_bytes(emulated_hpu):
    src = torch.ones(256, dtype=torch.bfloat16)  # 512 bytes
    with hpu_testing.count() as c:
        dev = src.to("hpu")
        dev.mul_(2)
        back = dev.cpu()
        dev.copy_(torch.zeros(256, dtype=torch.bfloat16))
        out = torch.empty(128, dtype=torch.bfloat16)
        out.copy_(dev[:128])
        dev.sum().item()  # bf16 scalar: 2 bytes
    assert (c.h2d_bytes, c.h2d_copies) == (1024, 2)
    assert (c.d2h_bytes, c.d2h_copies) == (512 + 256 + 2, 3)
    assert c.hpu_ops > 0
    assert torch.equal(back, src * 2)
    snap = hpu_testing.counters()
    assert snap["h2d_bytes"] == 1024 and snap["d2h_bytes"] == 770
    hpu_testing.reset_counters()
    assert all(v == 0 for v in hpu_testing.counters().values())
    assert c.h2d_bytes == 1024  # frozen after the block


def test_count_delta_is_live_inside_block(emulated_hpu):
    with hpu_testing.count() as c:
        torch.zeros(4).to("hpu")
        assert c.h2d_bytes == 16
        torch.hpu.synchronize()
        assert c.synchronize_calls == 1
    assert set(c.as_dict()) == set(hpu_testing.ALL_FIELDS)


def test_mark_step_counted_in_eager(emulated_hpu):
    import habana_frameworks.torch.core as htcore

    assert not emulated_hpu.lazy and not hpu_testing.is_lazy()
    htcore.mark_step()
    htcore.mark_step(sync=True)
    snap = emulated_hpu.counters()
    assert snap["mark_step_calls"] == 2 and snap["graph_flushes"] == 0


def test_install_is_idempotent(emulated_hpu):
    import os

    assert hpu_testing.install_emulator() is emulated_hpu
    assert hpu_testing.is_installed()
    assert os.environ["HPU_SHIM_FAKE_HPU"] == "1"


def test_query_reports_launched_work_in_flight_once(emulated_hpu):
    """Events and streams: query() is False while recorded work runs (HPUEvent.cpp, HPUStream.cpp)."""
    hpu = torch.hpu
    assert hpu.Event().query()  # never recorded
    x = torch.ones(1024, device="hpu")
    ev = hpu.Event()
    x.mul_(2)  # eager: a kernel launch
    ev.record()
    assert ev.query() is False  # in flight ...
    assert ev.query() is True  # ... and then done: polling loops end
    x.add_(1)
    assert hpu.current_stream().query() is False and hpu.current_stream().query() is True
    x.add_(1)
    ev.record()
    ev.synchronize()  # waits for it: no longer in flight
    assert ev.query()
    x.add_(1)
    ev.record()
    hpu.synchronize()
    assert ev.query()
    x.add_(1)
    ev.record()
    x.cpu()  # a blocking device->host copy waits for the work before it
    assert ev.query()
    assert torch.equal(x.cpu(), torch.full((1024,), 6.0))


LAZY_STREAMS = """
import torch
import hpu_shim.testing as T
from hpu_shim.testing import results
T.install_emulator()
hpu = torch.hpu
x = torch.zeros(8, device="hpu")
other = hpu.Stream()
out = {}
def case(name, fn):
    T.reset_counters()
    x.add_(1)  # one pending op
    fn()
    c = T.counters()
    out[name] = [c["graph_flushes"], c["event_record_flushes"], T.pending_ops()]
case("event_record_current", lambda: hpu.Event().record())
case("event_record_other", lambda: hpu.Event().record(other))
case("event_synchronize", lambda: hpu.Event().synchronize())
case("stream_sync_current", lambda: hpu.current_stream().synchronize())
case("stream_sync_other", lambda: other.synchronize())
case("stream_query_current", lambda: hpu.current_stream().query())
case("stream_query_other", lambda: other.query())
case("device_sync", hpu.synchronize)
case("set_stream_other", lambda: hpu.set_stream(other))
hpu.set_stream(hpu.default_stream())
case("set_stream_same", lambda: hpu.set_stream(hpu.default_stream()))
def ctx():
    with hpu.stream(other):
        x.add_(1)
case("stream_context", ctx)
T.reset_counters()
hpu.synchronize()
e = hpu.Event()
e.record()  # nothing pending: no flush to count
out["empty_record"] = T.counters()["event_record_flushes"]
x.add_(1)
e.record()  # launches the graph
out["query_after_launch"] = [e.query(), e.query()]
out["value"] = x.cpu().tolist()
results.emit(out)
"""


def test_lazy_events_and_streams_flush_like_the_bridge(run_py):
    """Events and streams, lazy mode (HPUEvent.cpp record, HPUStream.cpp synchronize/query/setCurrentHPUStream)."""
    out = run_py(LAZY_STREAMS, env={"PT_HPU_LAZY_MODE": "1"}).results[0]
    assert out["event_record_current"] == [1, 1, 0]  # a step marker on the current stream
    assert out["event_record_other"] == [0, 0, 1]
    assert out["event_synchronize"] == [0, 0, 1]  # waits on the event only
    assert out["stream_sync_current"] == [0, 0, 1]  # waits without flushing
    assert out["stream_sync_other"] == [1, 0, 0]
    assert out["stream_query_current"] == [0, 0, 1]
    assert out["stream_query_other"] == [1, 0, 0]
    assert out["device_sync"] == [1, 0, 0]
    assert out["set_stream_other"] == [1, 0, 0]  # switching streams is a step marker
    assert out["set_stream_same"] == [0, 0, 1]
    assert out["stream_context"][0] == 2  # in and out of the context
    assert out["empty_record"] == 0
    assert out["query_after_launch"] == [False, True]
    assert out["value"] == [13.0] * 8
