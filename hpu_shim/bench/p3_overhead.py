"""P3: what the shim costs outside its scope; P4: what one in-scope redirect costs.

In one fresh process with the cpu backend and a throwaway in-scope package (``benchscope``) next
to an out-of-scope one (``benchother``), like the test suite's ``pkgs`` fixture:

* P3a: ``torch.cuda`` attributes, and ``torch.cuda`` itself, as seen from out of scope, compared by
  identity before and after install; P3b: ``Tensor.to`` and every other ``Tensor`` attribute
  except the patched ``cuda``, by identity;
* P3c: ``Tensor.cuda`` called from out of scope, ns per call, the shim uninstalled and installed
  in alternating rounds. Installed as usual, the shim leaves ``Tensor.cuda`` alone (the rewrite
  tier covers LMCache's source); the class patch that a late install adds (a Python frame, one
  frame lookup, the scope test) is timed too, and so is a bare Python wrapper: the floor of any
  class-level patch. The CPU build of torch has no CUDA, so the call raises every time;
* P4: ``torch.cuda.current_device()`` in scope (proxy lookups, redirect, audit) vs the same call
  shape made straight on the backend object it lands on.

Each side keeps its fastest round (as ``timeit`` advises: slower rounds only add the machine's noise).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import _proc
from .config import Options
from .report import Row, verdict

__all__ = ["run", "measure"]

MAX_OUT_OF_SCOPE_NS, MAX_REDIRECT_US = 200, 0.5
SCOPE, OTHER = "benchscope", "benchother"
PKG = '''
import torch

def redirected(n):
    for _ in range(n):
        torch.cuda.current_device()

def direct(n):
    for _ in range(n):
        backend.current_device()
'''


def _ns_per_call(fn, calls: int) -> float:
    start = time.perf_counter_ns()
    fn(calls)
    return (time.perf_counter_ns() - start) / calls


def _tensor_cuda_loop(t):
    def loop(n):
        for _ in range(n):
            try:
                t.cuda()
            except (AssertionError, RuntimeError):  # torch built without CUDA
                pass
    return loop


def measure(calls: int, rounds: int) -> dict:
    import torch

    import hpu_shim

    tmp = Path(tempfile.mkdtemp(prefix="hpu-shim-bench-"))
    for name in (SCOPE, OTHER):
        (tmp / name).mkdir()
        (tmp / name / "__init__.py").write_text(PKG)
    sys.path.insert(0, str(tmp))
    cuda_before = {k: getattr(torch.cuda, k) for k in dir(torch.cuda)}
    tensor_before = dict(vars(torch.Tensor))
    to_before = torch.Tensor.to

    loop = _tensor_cuda_loop(torch.ones(1))
    loop(calls // 10)  # warm up
    original = torch.Tensor.cuda

    def bare(self, *args, **kwargs):  # the floor: any Python-level patch of Tensor.cuda costs this much
        return original(self, *args, **kwargs)

    from ..runtime.runtime import RUNTIME

    without, with_, patched, floor = [], [], [], []
    for _ in range(rounds):  # alternate, so all sides see the same machine
        without.append(_ns_per_call(loop, calls))
        hpu_shim.install(scope=SCOPE, backend="cpu")
        with_.append(_ns_per_call(loop, calls))
        RUNTIME.need_tensor_class_patch("bench: as after a late install")
        patched.append(_ns_per_call(loop, calls))
        hpu_shim.uninstall()
        torch.Tensor.cuda = bare
        floor.append(_ns_per_call(loop, calls))
        del torch.Tensor.cuda

    hpu_shim.install(scope=SCOPE, backend="cpu")
    import benchother
    import benchscope

    benchscope.backend = RUNTIME.backend
    changed_cuda = sorted(k for k, v in cuda_before.items() if getattr(torch.cuda, k, None) is not v)
    other_sees_real = benchother.torch.cuda is torch.cuda and sys.modules["torch.cuda"] is torch.cuda
    changed_tensor = sorted(k for k, v in vars(torch.Tensor).items() if k != "cuda" and tensor_before.get(k) is not v)
    redirected, direct = [], []
    for _ in range(rounds):
        redirected.append(_ns_per_call(benchscope.redirected, calls))
        direct.append(_ns_per_call(benchscope.direct, calls))
    in_scope_device = benchscope.torch.cuda.current_device()
    hpu_shim.uninstall()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "cuda_attrs_checked": len(cuda_before), "cuda_attrs_changed": changed_cuda,
        "out_of_scope_sees_real_torch_cuda": other_sees_real,
        "tensor_to_identical": torch.Tensor.to is to_before, "tensor_attrs_changed": changed_tensor,
        "tensor_cuda_ns": {"without": without, "with": with_, "with_class_patch": patched,
                           "bare_python_wrapper": floor},
        "current_device_ns": {"redirected": redirected, "direct": direct}, "redirect_result": in_scope_device,
        "calls": calls, "rounds": rounds,
    }


def run(opts: Options) -> tuple[list[Row], dict]:
    raw = _proc.run_child("p3_overhead", {"calls": opts.loop_calls, "rounds": opts.loop_rounds},
                          _proc.env(cache=opts.cache))
    changed = raw["cuda_attrs_changed"] + ([] if raw["out_of_scope_sees_real_torch_cuda"] else ["torch.cuda"])
    tensor_changed = raw["tensor_attrs_changed"] + ([] if raw["tensor_to_identical"] else ["to"])
    t = raw["tensor_cuda_ns"]
    delta, floor = min(t["with"]) - min(t["without"]), min(t["bare_python_wrapper"]) - min(t["without"])
    class_patch = min(t["with_class_patch"]) - min(t["without"])
    c = raw["current_device_ns"]
    redirect = (min(c["redirected"]) - min(c["direct"])) / 1000
    rows = [
        Row("P3", "(a) torch.cuda attributes changed, seen from out of scope",
            f"{len(changed)} of {raw['cuda_attrs_checked']}" + (f": {', '.join(changed[:5])}" if changed else ""),
            "0", verdict(not changed)),
        Row("P3", "(b) Tensor.to (and Tensor attributes other than cuda) changed",
            f"{len(tensor_changed)}" + (f": {', '.join(tensor_changed[:5])}" if tensor_changed else ""),
            "0", verdict(not tensor_changed)),
        Row("P3", "(c) Tensor.cuda called out of scope, per call",
            f"{delta:+.0f} ns as installed ({min(t['without']):.0f} -> {min(t['with']):.0f} ns; raises on CPU "
            f"torch); after a late install, with the class patch: {class_patch:+.0f} ns (a bare Python "
            f"wrapper: {floor:+.0f} ns)",
            f"<= +{MAX_OUT_OF_SCOPE_NS} ns", verdict(delta <= MAX_OUT_OF_SCOPE_NS)),
        Row("P4", "in-scope torch.cuda.current_device() vs the backend directly",
            f"{redirect:+.2f} us ({min(c['direct']):.0f} -> {min(c['redirected']):.0f} ns per call)",
            f"<= {MAX_REDIRECT_US} us", verdict(redirect <= MAX_REDIRECT_US)),
    ]
    return rows, raw
