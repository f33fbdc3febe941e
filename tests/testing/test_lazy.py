"""Execution modes and compile keys (hpu_shim.testing._lazy), each against the bridge fact it models.

Facts (docs/gaudi-semantics.md "Execution modes"): the default mode is the profile's (eager for
``latest``, lazy for bridge 1.19.0); ``lazy_only`` warns once per decorated function at import in eager
mode and makes ``mark_step`` a no-op; eager compiles per op keyed by (op, dtypes, ranks) because
shape-agnostic eager graphs are on by default; the lazy graph hash (``jit_graph_cache.cpp``,
``ComputeGraphHashCode``) keeps op names, graph topology, constant values (scalars, int lists),
input ranks/dtypes and the input shapes the recipe is compiled for.
"""

import torch

import hpu_shim.testing as hpu_testing

CHILD = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
import hpu_shim.testing as T
from hpu_shim.testing import results
emu = T.install_emulator()
import torch
import habana_frameworks.torch.core as htcore
"""

LAZY_KEYS = CHILD + """
def graphs(fn, *args):
    T.reset_counters()
    fn(*args)
    htcore.mark_step()
    return T.counters()["graph_compiles"]

x = torch.zeros(64, 8, device="hpu")
idx = torch.arange(4, device="hpu")
T.clear_graph_cache()
out = {"lazy": emu.lazy, "profile": emu.profile}
# constant values: the same op with another scalar or slice bound is another graph
out["scalar"] = [graphs(lambda s: x.fill_(s), s) for s in (2.0, 2.0, 3.0)]
# ... except scalars the op list turns into graph inputs (scalar_ids) and Python numbers that torch
# wraps into 0-dim host tensors (the bridge copies those to the device as inputs)
out["scalar_input"] = [graphs(lambda s: torch.mul(x, s), s) for s in (2.0, 2.0, 3.0)]
out["scalar_ids"] = [graphs(lambda s: torch.ops.aten.mul.Scalar(x, s), s) for s in (2.0, 2.0, 3.0)]
out["slice"] = [graphs(lambda a: x[a:a + 4].fill_(1), a) for a in (0, 0, 4)]
out["int_list"] = [graphs(lambda d: x.sum(dim=d), d) for d in ([0], [0], [1])]
# tensor-list shapes: cat of two [4,8] vs one [4,8] + one [8,8]
out["tensor_list"] = [graphs(lambda n: torch.cat([x[:4], x[:n]]), n) for n in (4, 4, 8)]
# factory sizes
out["factory"] = [graphs(lambda n: torch.empty(n, device="hpu").fill_(0), n) for n in (4, 4, 5)]
# out= tensors are part of the key
o4, o5 = torch.empty(4, device="hpu"), torch.empty(5, device="hpu")
out["out"] = [graphs(lambda o: torch.index_select(x[:, 0], 0, idx, out=o), o) for o in (o4, o4, o5)]
# topology: which pending op feeds which
def chain(first):
    a = x[:4] + 1
    b = x[:4] * 2
    ((a if first else b) - 1).sum()
out["topology"] = [graphs(chain, f) for f in (True, True, False)]
# input shapes: the recipe is compiled per shape (no dynamic shapes)
out["shape"] = [graphs(lambda n: torch.zeros(n, 8, device="hpu").add_(1), n) for n in (4, 4, 8)]
T.reset_counters()
htcore.mark_step()
out["empty_mark_step"] = T.counters()
results.emit(out)
"""


def test_lazy_graph_key_keeps_what_the_bridge_hash_keeps(run_py):
    proc = run_py(LAZY_KEYS, env={"PT_HPU_LAZY_MODE": "1"})
    out = proc.results[0]
    assert out["lazy"] and out["profile"] == "latest"
    assert out["scalar_input"] == [1, 0, 0] and out["scalar_ids"] == [1, 0, 0]
    for what in ("scalar", "slice", "int_list", "tensor_list", "factory", "out", "topology", "shape"):
        assert out[what] == [1, 0, 1], what  # first: compile, same again: cached, changed: compile
    empty = out["empty_mark_step"]
    assert empty["mark_step_calls"] == 1 and empty["graph_flushes"] == 0
    assert "does not have any effect" not in proc.stderr


def test_release_profile_1_19_defaults_to_lazy(run_py):
    code = CHILD + "results.emit([emu.lazy, emu.profile, T.is_lazy()])"
    assert run_py(code, env={"HPU_SHIM_FAKE_HPU_PROFILE": "1.19.0"}).results[0] == [True, "1.19.0", True]


def test_default_is_eager_and_warns_once_per_lazy_only_function_at_install(run_py):
    code = CHILD + "htcore.mark_step(); htcore.mark_step(); htcore.add_step_closure(print); " \
                   "results.emit([emu.lazy, emu.profile, T.counters()['mark_step_calls']])"
    proc = run_py(code)  # PT_HPU_LAZY_MODE unset
    assert proc.results[0] == [False, "latest", 2]
    for name in ("mark_step", "add_step_closure", "iter_mark_step"):
        line = f"Calling {name} function does not have any effect. It's lazy mode only functionality."
        assert proc.stderr.count(line) == 1, proc.stderr


def test_bad_lazy_mode_refuses_install_and_changes_nothing(run_py):
    code = """
    import sys
    import hpu_shim.testing as T
    from hpu_shim.testing import results
    try:
        T.install_emulator()
    except T.EmulatorConfigError as e:
        results.emit([str(e), T.is_installed(), "torch.hpu" in sys.modules])
    """
    msg, installed, registered = run_py(code, env={"PT_HPU_LAZY_MODE": "2"}).results[0]
    assert "PT_HPU_LAZY_MODE='2'" in msg and "use 0 (eager) or 1 (lazy)" in msg
    assert not installed and not registered


def test_eager_compile_key_is_op_dtypes_ranks(emulated_hpu):
    assert not emulated_hpu.lazy
    hpu_testing.clear_graph_cache()
    with hpu_testing.count() as c:
        for n in (4, 8, 16):  # shapes do not matter: one compile
            torch.ones(n, device="hpu").add_(1)
    assert c.eager_compiles == 2  # ones' fill + add_; the allocation compiles nothing
    with hpu_testing.count() as c:
        torch.ones(4, 4, device="hpu").add_(1)  # new ranks
        torch.ones(4, dtype=torch.bfloat16, device="hpu").add_(1)  # new dtype
        torch.ones(7, device="hpu").add_(2)  # nothing new
    assert c.eager_compiles == 4 and c.graph_flushes == 0 and c.graph_compiles == 0


def test_eager_views_and_transfers_compile_nothing(emulated_hpu):
    x = torch.ones(4, 4, device="hpu")
    hpu_testing.clear_graph_cache()
    with hpu_testing.count() as c:
        x.view(16)[2:]
        x.transpose(0, 1).select(0, 1)
        x.cpu()
        x.copy_(torch.zeros(4, 4))
    assert c.eager_compiles == 0 and c.hpu_ops > 0


def test_eager_mark_step_is_a_noop(emulated_hpu):
    import habana_frameworks.torch.core as htcore

    x = torch.ones(4, device="hpu") * 2
    with hpu_testing.count() as c:
        htcore.mark_step()
        calls = []
        htcore.add_step_closure(lambda: calls.append(1))
        htcore.mark_step()
    assert c.mark_step_calls == 2 and c.graph_flushes == 0 and calls == [] and hpu_testing.pending_ops() == 0
    assert torch.equal(x.cpu(), torch.full((4,), 2.0))
