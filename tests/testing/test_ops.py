"""The bridge's op list and CPU fallback (hpu_shim.testing._ops).

Facts (docs/gaudi-semantics.md "CPU fallback"): every aten op without an HPU kernel goes through the
bridge's boxed fallback (hpu_ops/cpu_fallback.cpp: inputs to the host, CPU kernel, results back),
allowed unless PT_HPU_PLACE_ON_CPU says otherwise (habana_kernels/fallback_helper.h: "<op> is not yet
supported on HPU."); the kernels are those of scripts/hpu_op.yaml plus hand-registered ones (v1.19.0);
index_select falls back when self has more than 5 dims (hpu_ops/lazy/index_select_gen.cpp); eager
advanced indexing with host indices falls back (hpu_ops/eager/index_gen.cpp), lazy does not.
"""

import torch

import hpu_shim.testing as hpu_testing
from hpu_shim.testing import _ops


def test_allow_list_is_the_bridge_v1_19_list():
    rows = _ops.allow_list()
    assert 1000 < len(rows) < 1100
    with open(_ops.DATA_FILE, encoding="utf-8") as fh:
        head = fh.read(400)
    assert "gaudi-pytorch-bridge v1.19.0" in head and "5a56187e98684ceff3de8965ce88a284cf7d7eef" in head
    assert rows["aten::index_select"].fallback_check == "IndexSelectFallbackCheck"
    assert rows["aten::mul.Scalar"].scalar_ids == (1,)
    assert rows["aten::unfold"].modes == frozenset({"eager"})  # registered by the eager plugin only
    for op in ("aten::index_copy_", "aten::copy_", "aten::cat", "aten::view", "aten::_local_scalar_dense"):
        assert op in rows, op
    assert "aten::histc" not in rows and "aten::stack" not in rows


def test_op_without_hpu_kernel_falls_back_to_the_cpu(emulated_hpu):
    x = torch.tensor([0.5, 1.5, 2.5, 2.6, 3.5], device="hpu")
    with hpu_testing.count() as c:
        hist = torch.histc(x, bins=4, min=0, max=4)
    assert hist.device.type == "hpu" and torch.equal(hist.cpu(), torch.tensor([1.0, 1.0, 2.0, 1.0]))
    assert c.cpu_fallbacks == 1
    assert (c.d2h_copies, c.blocking_d2h_copies, c.d2h_bytes) == (1, 1, 20)  # the input to the host
    assert (c.h2d_copies, c.h2d_bytes) == (1, 16)  # the result back
    assert c.eager_compiles == 0  # nothing ran on the device


def test_ops_with_kernels_or_composites_do_not_fall_back(emulated_hpu):
    x = torch.arange(24.0, device="hpu").view(4, 6)
    idx = torch.tensor([2, 0], device="hpu")
    with hpu_testing.count() as c:
        x.index_select(0, idx)
        x.view(24).index_copy_(0, idx, torch.ones(2, device="hpu"))
        torch.stack([x, x])  # composite in torch: decomposed on any device
        x.to(torch.bfloat16)
        (x + 1).sum()
        x[idx]
    assert c.cpu_fallbacks == 0


def test_index_select_above_five_dims_falls_back(emulated_hpu):
    idx = torch.tensor([0], device="hpu")
    five = torch.zeros(2, 1, 1, 1, 3, device="hpu")
    six = torch.zeros(2, 1, 1, 1, 1, 3, device="hpu")
    with hpu_testing.count() as c:
        five.index_select(0, idx)
    assert c.cpu_fallbacks == 0
    with hpu_testing.count() as c:
        out = six.index_select(0, idx)
    assert c.cpu_fallbacks == 1 and out.shape == (1, 1, 1, 1, 1, 3) and out.device.type == "hpu"


def test_eager_indexing_with_host_indices_falls_back(emulated_hpu):
    x = torch.arange(8.0, device="hpu")
    with hpu_testing.count() as c:
        got = x[torch.tensor([1, 5])]
    assert torch.equal(got.cpu(), torch.tensor([1.0, 5.0]))
    assert c.cpu_fallbacks == 1 and c.d2h_bytes == 32  # all of x went to the host


PLACE_ON_CPU = """
import torch
import hpu_shim.testing as T
from hpu_shim.testing import results
emu = T.install_emulator()
x = torch.arange(8.0, device="hpu")
out = {"lazy": emu.lazy}
T.reset_counters()
(x * 2).sum()  # pending lazy work
torch.histc(x, bins=2)
out["histc"] = [T.counters()["cpu_fallbacks"], T.counters()["graph_flushes"]]
T.reset_counters()
x[torch.tensor([1, 2])]
out["host_index"] = T.counters()["cpu_fallbacks"]
try:
    torch.nanmedian(x)
    out["nanmedian"] = "ran"
except RuntimeError as e:
    out["nanmedian"] = str(e)
results.emit(out)
"""


def test_place_on_cpu_lists_the_ops_allowed_to_fall_back(run_py):
    out = run_py(PLACE_ON_CPU, env={"PT_HPU_LAZY_MODE": "1", "PT_HPU_PLACE_ON_CPU": "aten::histc"}).results[0]
    assert out["lazy"]
    assert out["histc"] == [1, 1]  # allowed; its device->host copy flushed the pending graph
    assert out["host_index"] == 0  # lazy indexes with host indices on the HPU
    assert out["nanmedian"].startswith("aten::nanmedian is not yet supported on HPU.")
    assert "PT_HPU_PLACE_ON_CPU" in out["nanmedian"]
