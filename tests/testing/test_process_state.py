"""Behaviour that depends on process-wide state, each case in a fresh interpreter."""

import os
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])

PRELUDE = """
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
import hpu_shim.testing as T
import hpu_shim.testing.results
T.install_emulator()
import torch
import habana_frameworks.torch as htorch
"""

LAZY_WORKLOAD = PRELUDE + """
def step(n):
    x = torch.zeros(n, 4, device="hpu")
    x.add_(1)
    htorch.core.mark_step()

out = {"lazy": T.is_lazy(), "mode_attr": htorch.utils.internal.is_lazy()}
T.reset_counters()
step(8); step(8)
out["same"] = T.counters()
T.reset_counters()
step(8); step(16)
out["different"] = T.counters()
T.reset_counters()
x = torch.ones(4, device="hpu") * 3
out["pending_before_read"] = T.pending_ops()
x.cpu()  # implicit flush (d2h)
out["after_d2h"] = T.counters()
y = x + 1
torch.hpu.synchronize()  # implicit flush
out["after_sync"] = T.counters()
os.environ["PT_HPU_LAZY_MODE"] = "1" if not T.is_lazy() else "0"
out["mode_fixed"] = T.is_lazy() == out["lazy"]
T.results.emit(out)
"""


def _json(proc):
    assert len(proc.results) == 1, proc.stdout + proc.stderr
    return proc.results[0]


def test_lazy_mode_graph_signatures(run_py):
    out = _json(run_py(LAZY_WORKLOAD, env={"PT_HPU_LAZY_MODE": "1"}))
    assert out["lazy"] and out["mode_attr"] and out["mode_fixed"]
    same, diff = out["same"], out["different"]
    assert same["mark_step_calls"] == 2 and same["graph_flushes"] == 2
    assert same["distinct_graphs"] == 1
    assert diff["graph_flushes"] == 2 and diff["distinct_graphs"] == 2
    assert diff["graph_compiles"] == 1  # the (8,) graph was already in the cache
    assert out["pending_before_read"] > 0
    assert out["after_d2h"]["graph_flushes"] == 1 and out["after_d2h"]["d2h_bytes"] == 16
    assert out["after_sync"]["graph_flushes"] == 2 and out["after_sync"]["synchronize_calls"] == 1


def test_eager_mode_mark_step_is_noop_and_warns_once(run_py):
    proc = run_py(LAZY_WORKLOAD)  # PT_HPU_LAZY_MODE unset: eager by default
    out = _json(proc)
    assert not out["lazy"] and out["mode_fixed"]
    for key in ("same", "different", "after_d2h", "after_sync"):
        assert out[key]["graph_flushes"] == 0 and out[key]["distinct_graphs"] == 0
    assert out["same"]["mark_step_calls"] == 2
    warning = "Calling mark_step function does not have any effect. It's lazy mode only functionality."
    assert proc.stderr.count(warning) == 1, proc.stderr


def test_explicit_eager_env(run_py):
    out = _json(run_py(PRELUDE + "T.results.emit(T.is_lazy())", env={"PT_HPU_LAZY_MODE": "0"}))
    assert out is False


def test_habana_import_forms(run_py):
    code = """
    import sys
    import hpu_shim.testing as T
    T.install_emulator()
    import habana_frameworks.torch as htorch
    import habana_frameworks.torch.core as htcore
    import habana_frameworks.torch.hpu as hthpu
    from habana_frameworks.torch.utils.internal import is_lazy
    from habana_frameworks.torch.core import mark_step
    import torch
    assert htorch.core is htcore and htcore.mark_step is mark_step
    assert hthpu is torch.hpu is htorch.hpu is sys.modules["torch.hpu"]
    assert is_lazy() is False
    htorch.core.mark_step()
    htcore.mark_step("hpu", sync=True)
    assert T.counters()["mark_step_calls"] == 2
    import importlib.util
    assert importlib.util.find_spec("habana_frameworks.torch.core") is not None
    import os
    assert os.environ["HPU_SHIM_FAKE_HPU"] == "1"
    print("ok")
    """
    assert run_py(code).stdout.strip() == "ok"


def test_refuses_when_torch_hpu_preexists(run_py):
    code = """
    import types, torch
    torch._register_device_module("hpu", types.ModuleType("someone_elses_hpu"))
    import hpu_shim.testing as T
    try:
        T.install_emulator()
    except T.EmulatorInstallError as e:
        print("refused:", e)
    assert not T.is_installed()
    """
    proc = run_py(code)
    assert "refused: torch.hpu already exists" in proc.stdout


def test_refuses_to_shadow_real_habana(run_py, tmp_path):
    pkg = tmp_path / "habana_frameworks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    code = """
    import sys
    import hpu_shim.testing as T
    try:
        T.install_emulator()
    except RuntimeError as e:
        print("refused:", e)
    assert not T.is_installed() and "torch.hpu" not in sys.modules
    """
    proc = run_py(code, env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert "refused: a real habana_frameworks is importable" in proc.stdout


def test_import_is_cheap_and_no_torch(run_py):
    code = """
    import sys
    import hpu_shim  # the parent package is not ours; only judge what hpu_shim.testing adds
    torch_before = "torch" in sys.modules
    import hpu_shim.testing as T
    assert torch_before or "torch" not in sys.modules, "importing hpu_shim.testing must not import torch"
    assert T.counters()["hpu_ops"] == 0 and not T.is_installed()
    print("ok")
    """
    assert run_py(code).stdout.strip() == "ok"


def test_memory_limit_from_env(run_py):
    code = PRELUDE + 'T.results.emit([torch.hpu.memory_stats()["Limit"], torch.hpu.mem_get_info()[1]])'
    out = _json(run_py(code, env={"HPU_SHIM_FAKE_HPU_MEMORY": str(1 << 30)}))
    assert out == [1 << 30, 1 << 30]
