"""hpu_shim.backends on the emulated HPU (fresh interpreters: the emulator is once per process)."""

from _helpers import REPO, run_py

SITE = str(REPO / "sitecustomize")
FAKE_HPU = {"PYTHONPATH": SITE, "HPU_SHIM_FAKE_HPU": "1", "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "hpu",
            "PT_HPU_LAZY_MODE": "1"}

HPU_SEMANTICS = '''
import json, torch, hpu_shim, hpu_shim.testing as emu
import lmcache
tc = lmcache.torch.cuda
out = {}
with emu.count() as c:
    tc.synchronize()
    tc.synchronize(0)
out["sync"] = [c.mark_step_calls, c.synchronize_calls]
s = tc.Stream(device=0, priority=-1)
out["stream"] = [type(s).__module__ + "." + type(s).__name__, isinstance(s, tc.Stream), hasattr(s, "cuda_stream")]
with tc.stream(s):
    out["current_is_s"] = tc.current_stream() == s
e = tc.Event(enable_timing=True, blocking=True)
out["event"] = [type(e).__name__, isinstance(e, tc.Event)]
p = tc.get_device_properties(0)
out["props"] = [p.name, p.total_memory, type(torch.hpu.get_device_properties(0)).__name__]
out["noops"] = [tc.empty_cache(), tc.nvtx.range_push("x"), tc.nvtx.range_pop(), tc.cudart()]
with tc.nvtx.range("r"):
    pass
out["report"] = [r.line() for r in hpu_shim.report()]
out["device"] = [str(lmcache.tensor_cuda(torch.ones(2)).device), str(lmcache.factory().device),
                 str(lmcache.tensor_to(torch.ones(2), "cuda:0").device), str(lmcache.make_device("cuda"))]
out["counts"] = [tc.device_count(), tc.current_device(), tc.is_available()]
try:
    torch.empty(2, pin_memory=True)
    out["pin_outside"] = "pinned"
except RuntimeError as exc:
    out["pin_outside"] = str(exc)
from hpu_shim.testing.results import emit
emit(out)
'''


def _out(proc):
    assert len(proc.results) == 1, proc.stdout + proc.stderr
    return proc.results[0]


def test_hpu_semantics(pkgs):
    out = _out(run_py(HPU_SEMANTICS, path=[pkgs], env=FAKE_HPU))
    assert out["sync"] == [2, 2]  # each torch.cuda.synchronize() = mark_step() + torch.hpu.synchronize()
    assert out["stream"][0].endswith("Stream") and "hpu" in out["stream"][0] and out["stream"][1] is True
    assert out["stream"][2] is False and out["current_is_s"] is True
    assert out["event"] == ["Event", True]
    name, total, raw_type = out["props"]
    assert "GAUDI" in name and total > 0 and raw_type == "str"  # torch.hpu itself returns a str
    assert out["noops"] == [None, None, None, None]
    assert out["device"] == ["hpu:0", "hpu:0", "hpu:0", "hpu"]
    assert out["counts"] == [1, 0, True]
    assert out["pin_outside"] == "pinned"  # outside the scope torch decides (the latest bridge can pin)
    sites = "\n".join(out["report"])
    assert "[modified] torch.cuda.synchronize(0) -> habana_frameworks.torch.core.mark_step(); torch.hpu.synchronize()" in sites
    assert "[mismatch] torch.cuda.empty_cache() -> no-op" in sites


PIN = '''
import torch, lmcache.pin, otherpkg.pin
from hpu_shim.testing.results import emit
t = lmcache.pin.buf()
try:
    other = otherpkg.pin.buf().is_pinned()
except RuntimeError as exc:
    other = "raised"
emit({"in_scope": t.is_pinned(), "method_is_identity": lmcache.pin.pinned(t) is t, "other": other})
'''


def test_pin_memory_in_scope_follows_the_bridge(pkgs):
    """A bridge without a pinned allocator (profile 1.18.0): dropped in scope with one log line per site,
    raising out of scope as torch does; the latest bridge pins: kept in scope, nothing logged."""
    (pkgs / "lmcache" / "pin.py").write_text(
        "import torch\ndef buf():\n    return torch.empty(4, pin_memory=True)\n"
        "def pinned(t):\n    return t.pin_memory()\n")
    (pkgs / "otherpkg" / "pin.py").write_text((pkgs / "lmcache" / "pin.py").read_text())
    old = run_py(PIN, path=[pkgs], env={**FAKE_HPU, "HPU_SHIM_LOG_LEVEL": "INFO", "HPU_SHIM_FAKE_HPU_PROFILE": "1.18.0"})
    assert _out(old) == {"in_scope": False, "method_is_identity": True, "other": "raised"}
    assert "pin_memory=True dropped at lmcache/pin.py:3" in old.stderr
    new = run_py(PIN, path=[pkgs], env={**FAKE_HPU, "HPU_SHIM_LOG_LEVEL": "INFO"})
    assert _out(new) == {"in_scope": True, "method_is_identity": True, "other": True}  # pinned: pin_memory() is t
    assert "dropped" not in new.stderr


def test_required_hpu_without_one_fails_clearly(pkgs):
    proc = run_py("import hpu_shim, lmcache", path=[pkgs], env={"HPU_SHIM_BACKEND": "hpu"}, check=False)
    assert proc.returncode != 0
    assert "BackendUnavailable" in proc.stderr and "HPU_SHIM_BACKEND=hpu requires an HPU" in proc.stderr
    assert "HPU_SHIM_BACKEND=cpu" in proc.stderr  # says what to do


def test_auto_without_hpu_is_idle(pkgs):
    proc = run_py('''
        import hpu_shim, lmcache
        print("STATE", hpu_shim.status()["state"], lmcache.AVAILABLE_AT_IMPORT, hpu_shim.report())
    ''', path=[pkgs], env={"HPU_SHIM_LOG_LEVEL": "INFO"})
    assert "STATE idle False []" in proc.stdout
    assert proc.stderr.count("staying idle") == 1


def test_auto_with_hpu_is_active(pkgs):
    proc = run_py('import hpu_shim, lmcache; print("STATE", hpu_shim.status()["backend"], lmcache.AVAILABLE_AT_IMPORT)',
                  path=[pkgs], env={**FAKE_HPU, "HPU_SHIM_BACKEND": "auto"})
    assert "STATE hpu True" in proc.stdout


def test_cpu_backend_streams_and_events(shim):
    shim.install(backend="cpu")
    import lmcache

    tc = lmcache.torch.cuda
    start, end = tc.Event(enable_timing=True), tc.Event(enable_timing=True)
    s = tc.Stream()
    start.record(s)
    with tc.stream(s):
        assert tc.current_stream() is s
    end.record(s)
    s.synchronize()
    assert end.query() and start.elapsed_time(end) >= 0 and tc.default_stream() is not s
    free, total = tc.mem_get_info()
    assert 0 < free <= total
