"""P3: what the shim costs outside its scope; P4: what one in-scope redirect costs.

In one fresh process with the cpu backend and a throwaway in-scope package (``benchscope``) next
to an out-of-scope one (``benchother``), like the test suite's ``pkgs`` fixture:

* P3a: ``torch.cuda`` attributes, and ``torch.cuda`` itself, as seen from out of scope, compared by
  identity before and after install; P3b: ``Tensor.to`` and every other ``Tensor`` attribute
  except the patched ``cuda``, by identity;
* P3c: ``Tensor.cuda`` called from out of scope, ns per call over no patch at all, judged with the
  class patch installed (``need_tensor_class_patch``, what a late install or source the rewrite tier
  could not see turns on). The CPU build of torch has no CUDA, so the call raises every time;
* P4: ``torch.cuda.current_device()`` in scope (proxy lookups, redirect, audit) vs the same call
  made straight on the backend object it lands on.

Patch designs side by side (``VARIANTS``), so a choice between wrapt's C ``FunctionWrapper`` /
``ObjectProxy`` and hand-written Python wrappers / proxies is made on data: for P3c each design of
a ``Tensor.cuda`` class patch (pass-through, and with the depth-1 caller-scope check), for P4 each
design of the two proxy levels of ``torch.cuda.current_device()``. They measure the mechanism only
(no audit, no device translation). All sides alternate round by round and keep their fastest round
(as ``timeit`` advises: slower rounds only add the machine's noise).
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
MODE = "cpu backend, in process"
PKG = '''
import torch

def redirected(n):
    for _ in range(n):
        torch.cuda.current_device()

def direct(n):
    for _ in range(n):
        backend.current_device()

def through(proxy, n):
    for _ in range(n):
        proxy.cuda.current_device()
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


# -- P3c designs: a class-level Tensor.cuda patch ------------------------------------------------------

def _cuda_patches(original, scope_names: dict) -> dict:
    """name -> the object to put on ``torch.Tensor.cuda``; the scope check is a depth-1 frame + dict hit."""
    import wrapt

    getframe = sys._getframe

    def bare(self, *args, **kwargs):
        return original(self, *args, **kwargs)

    def checked(self, *args, **kwargs):
        if scope_names.get(getframe(1).f_globals.get("__name__")):
            raise AssertionError("unreachable in the bench: the caller is out of scope")
        return original(self, *args, **kwargs)

    def w_bare(wrapped, instance, args, kwargs):
        return wrapped(*args, **kwargs)

    def w_checked(wrapped, instance, args, kwargs):
        # wrapt calls this from C: one frame up is the caller of t.cuda()
        if scope_names.get(getframe(1).f_globals.get("__name__")):
            raise AssertionError("unreachable in the bench: the caller is out of scope")
        return wrapped(*args, **kwargs)

    return {"hand-written def, pass-through": bare, "hand-written def + scope check": checked,
            "wrapt.FunctionWrapper, pass-through": wrapt.FunctionWrapper(original, w_bare),
            "wrapt.FunctionWrapper + scope check": wrapt.FunctionWrapper(original, w_checked)}


# -- P4 designs: the two proxy levels of torch.cuda.current_device() --------------------------------------

def _proxies(torch, backend) -> dict:
    import wrapt

    table = {"current_device": backend.current_device}

    class CudaGetattr:
        def __getattr__(self, name):
            return table[name]

    class TorchGetattr:
        cuda_proxy = CudaGetattr()

        def __getattr__(self, name):
            return self.cuda_proxy if name == "cuda" else getattr(torch, name)

    class CudaCached:
        def __getattr__(self, name):
            value = table[name]
            setattr(self, name, value)  # later lookups are plain instance-dict hits
            return value

    class TorchCached:
        def __getattr__(self, name):
            value = CudaCached() if name == "cuda" else getattr(torch, name)
            setattr(self, name, value)
            return value

    class CudaWraptAttr(wrapt.ObjectProxy):
        current_device = staticmethod(backend.current_device)

    class TorchWraptAttr(wrapt.ObjectProxy):
        cuda = CudaWraptAttr(torch.cuda)

    class CudaWraptGetattr(wrapt.ObjectProxy):
        def __getattr__(self, name):
            return table[name] if name in table else getattr(self.__wrapped__, name)

    cuda_wg = CudaWraptGetattr(torch.cuda)

    class TorchWraptGetattr(wrapt.ObjectProxy):
        def __getattr__(self, name):
            return cuda_wg if name == "cuda" else getattr(self.__wrapped__, name)

    return {"hand-written, __getattr__ per access": TorchGetattr(),
            "hand-written, cached in the instance dict": TorchCached(),
            "wrapt.ObjectProxy, redirect as a class attribute": TorchWraptAttr(torch),
            "wrapt.ObjectProxy, redirect via __getattr__": TorchWraptGetattr(torch)}


def measure(calls: int, rounds: int) -> dict:
    import torch

    import hpu_shim
    from ..runtime.runtime import RUNTIME

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
    designs = _cuda_patches(original, {SCOPE: True})
    ns: dict[str, list[float]] = {"none": [], "as installed": [], "with class patch": [], **{k: [] for k in designs}}
    for _ in range(rounds):  # alternate, so all sides see the same machine
        ns["none"].append(_ns_per_call(loop, calls))
        hpu_shim.install(scope=SCOPE, backend="cpu")
        ns["as installed"].append(_ns_per_call(loop, calls))
        RUNTIME.need_tensor_class_patch("bench: as after a late install")
        ns["with class patch"].append(_ns_per_call(loop, calls))
        hpu_shim.uninstall()
        for name, patch in designs.items():
            torch.Tensor.cuda = patch
            ns[name].append(_ns_per_call(loop, calls))
            del torch.Tensor.cuda
    if torch.Tensor.cuda is not original:
        raise RuntimeError("Tensor.cuda was not restored after uninstall()")

    hpu_shim.install(scope=SCOPE, backend="cpu")
    import benchother
    import benchscope

    benchscope.backend = RUNTIME.backend
    changed_cuda = sorted(k for k, v in cuda_before.items() if getattr(torch.cuda, k, None) is not v)
    other_sees_real = benchother.torch.cuda is torch.cuda and sys.modules["torch.cuda"] is torch.cuda
    changed_tensor = sorted(k for k, v in vars(torch.Tensor).items() if k != "cuda" and tensor_before.get(k) is not v)
    proxies = _proxies(torch, RUNTIME.backend)
    for proxy in proxies.values():
        if proxy.cuda.current_device() != RUNTIME.backend.current_device():
            raise RuntimeError(f"proxy design {proxy!r} does not reach the backend")
    call_ns: dict[str, list[float]] = {"shim": [], "direct": [], **{k: [] for k in proxies}}
    for _ in range(rounds):
        call_ns["shim"].append(_ns_per_call(benchscope.redirected, calls))
        call_ns["direct"].append(_ns_per_call(benchscope.direct, calls))
        for name, proxy in proxies.items():
            call_ns[name].append(_ns_per_call(lambda n, p=proxy: benchother.through(p, n), calls))
    in_scope_device = benchscope.torch.cuda.current_device()
    hpu_shim.uninstall()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "cuda_attrs_checked": len(cuda_before), "cuda_attrs_changed": changed_cuda,
        "out_of_scope_sees_real_torch_cuda": other_sees_real,
        "tensor_to_identical": torch.Tensor.to is to_before, "tensor_attrs_changed": changed_tensor,
        "tensor_cuda_ns": ns, "current_device_ns": call_ns, "redirect_result": in_scope_device,
        "calls": calls, "rounds": rounds,
    }


def run(opts: Options) -> tuple[list[Row], dict]:
    raw = _proc.run_child("p3_overhead", {"calls": opts.loop_calls, "rounds": opts.loop_rounds},
                          _proc.env(cache=opts.cache))
    changed = raw["cuda_attrs_changed"] + ([] if raw["out_of_scope_sees_real_torch_cuda"] else ["torch.cuda"])
    tensor_changed = raw["tensor_attrs_changed"] + ([] if raw["tensor_to_identical"] else ["to"])
    t = {name: min(v) for name, v in raw["tensor_cuda_ns"].items()}
    base = t["none"]
    patched, installed = t["with class patch"] - base, t["as installed"] - base
    c = {name: min(v) for name, v in raw["current_device_ns"].items()}
    redirect = (c["shim"] - c["direct"]) / 1000
    designs = [k for k in raw["tensor_cuda_ns"] if k not in ("none", "as installed", "with class patch")]
    proxies = [k for k in raw["current_device_ns"] if k not in ("shim", "direct")]
    p3 = "Tensor.cuda from out-of-scope code (raises on CPU torch), ns per call over no patch"
    rows = [
        Row("P3", "(a) torch.cuda attributes changed, seen from out of scope",
            f"{len(changed)} of {raw['cuda_attrs_checked']}" + (f": {', '.join(changed[:5])}" if changed else ""),
            "0", verdict(not changed), mode=MODE, path="hpu_shim.install(scope=benchscope)"),
        Row("P3", "(b) Tensor.to (and Tensor attributes other than cuda) changed",
            f"{len(tensor_changed)}" + (f": {', '.join(tensor_changed[:5])}" if tensor_changed else ""),
            "0", verdict(not tensor_changed), mode=MODE, path="hpu_shim.install(scope=benchscope)"),
        Row("P3", "(c) Tensor.cuda called out of scope, class patch installed, per call",
            f"{patched:+.0f} ns ({base:.0f} -> {t['with class patch']:.0f} ns); installed without the class patch "
            f"(the common case): {installed:+.0f} ns",
            f"<= +{MAX_OUT_OF_SCOPE_NS} ns", verdict(patched <= MAX_OUT_OF_SCOPE_NS), mode=MODE,
            path="hpu_shim's Tensor.cuda class patch (need_tensor_class_patch, as after a late install)"),
        Row("P3", "(c) Tensor.cuda class-patch designs side by side, per call",
            "; ".join(f"{name}: {t[name] - base:+.0f} ns" for name in designs),
            "report it (design data)", "INFO", mode=MODE, path=p3),
        Row("P4", "in-scope torch.cuda.current_device() vs the backend directly",
            f"{redirect:+.2f} us ({c['direct']:.0f} -> {c['shim']:.0f} ns per call)",
            f"<= {MAX_REDIRECT_US} us", verdict(redirect <= MAX_REDIRECT_US), mode=MODE,
            path="hpu_shim's torch / torch.cuda proxies, redirect and audit"),
        Row("P4", "torch.cuda.current_device() proxy designs side by side, per call",
            "; ".join(f"{name}: {(c[name] - c['direct']) / 1000:+.2f} us" for name in proxies),
            "report it (design data)", "INFO", mode=MODE,
            path="two proxy levels (torch, torch.cuda) to the backend's method; mechanism only, no audit"),
    ]
    return rows, raw
