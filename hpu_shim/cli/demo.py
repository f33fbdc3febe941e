"""``python -m hpu_shim demo``: CUDA-only code run unmodified on the emulated HPU through the shim.

With ``--lmcache DIR`` (``make demo`` passes a real LMCache 0.3.7 install) the child drives
LMCache's own engine and vLLM connector (``hpu_shim.testing.lmcache_roundtrip``); without it, a
small CUDA-written toy package. The child gets the shim the way a container does
(``PYTHONPATH=<sitecustomize>``, ``HPU_SHIM=1``) plus ``HPU_SHIM_FAKE_HPU=1`` for the emulator;
the parent prints tokens stored and retrieved, the bit-exact verdict, device sync counts and the
merged audit of redirected call sites.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

__all__ = ["main"]

_CHILD = r"""
import json, torch, hpu_shim, hpu_shim.testing as emu
import kvdemo
tokens = 1000
gen = torch.Generator().manual_seed(0)
slots = torch.randperm(kvdemo.Offloader().kv.shape[1], generator=gen)[:tokens]
off = kvdemo.Offloader()
before = off.kv.cpu()
with emu.count() as c:
    off.store(slots)
    off.wipe()
    off.retrieve(slots)
after = off.kv.cpu()
mask = torch.zeros(after.shape[1], dtype=torch.bool); mask[slots] = True
result = {
    "device": str(off.kv.device), "props": [off.props.name, off.props.total_memory],
    "tokens_stored": tokens, "tokens_retrieved": int(mask.sum()),
    "bit_exact": bool(torch.equal(after[:, mask], before[:, mask])),
    "untouched_elsewhere": bool((after[:, ~mask] == 0).all()),
    "counters": c.as_dict(),
    "other_library_torch_cuda_is_real": torch.cuda.is_available() is False,
    "status": {k: hpu_shim.status()[k] for k in ("state", "backend", "device", "scope", "shimmed_modules")},
}
from hpu_shim.testing.results import emit
emit(result)
"""


def _child_env(report: str, scope: str, code_dir: str) -> dict:
    from ..runtime.runtime import bootstrap_dir

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM")}
    env.update(HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1", HPU_SHIM_BACKEND="hpu", HPU_SHIM_SCOPE=scope,
               HPU_SHIM_REPORT=report, PT_HPU_LAZY_MODE=os.environ.get("PT_HPU_LAZY_MODE", "1"),
               LMCACHE_TRACK_USAGE="false")
    env["PYTHONPATH"] = os.pathsep.join([bootstrap_dir(), code_dir, root, os.environ.get("PYTHONPATH", "")])
    return env


def _lmcache_version(path: str) -> str:
    import glob

    found = glob.glob(os.path.join(path, "lmcache-*.dist-info"))
    return os.path.basename(found[0])[len("lmcache-"):-len(".dist-info")] if found else "?"


def _run_lmcache(path: str, report: str) -> int:
    import json

    from ..audit import merge, read_jsonl, render_table

    if not os.path.isfile(os.path.join(path, "lmcache", "__init__.py")):
        print(f"demo: {path!r} holds no LMCache install (run `make lmcache-envs`, or pass --lmcache "
              f"<dir with lmcache/>)", file=sys.stderr)
        return 2
    # vLLM-style slot mappings (whole-block runs), as vLLM hands them to LMCache; the test suite adds random ones
    cases = [{"layout": "kv_tuple", "dtype": "bfloat16", "num_layers": 32, "tokens": 4096, "num_blocks": 40,
              "save_unfull_chunk": True, "slots": "paged"},
             {"layout": "flat", "dtype": "float16", "tokens": 1000, "prefix_hit": 512, "slots": "paged"}]
    from ..testing.results import run_child

    child = run_child([sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps(cases)],
                      env=_child_env(report, "lmcache", path), timeout=1800)
    results = child.results
    if len(results) != len(cases) or any("error" in r for r in results):
        print(child.diagnostics(4000) + "\n" + "\n".join(str(r.get("error")) for r in results), file=sys.stderr)
        print("demo FAILED", file=sys.stderr)
        return 1
    print(f"hpu_shim demo: real LMCache {_lmcache_version(path)} (unmodified, CUDA-only) on the emulated HPU "
          f"(hpu_shim.testing), lazy mode")
    ok = True
    for r in results:
        c, s, t = r["case"], r["store_counts"], r["retrieve_counts"]
        ok &= r["bit_exact"] and r["untouched_elsewhere"] and r["retrieved"] > 0
        print(f"  case           : {c['layout']} {c['dtype']}, {c['num_layers']} layers, {c['tokens']} tokens, "
              f"chunk {c['chunk_size']}" + (f", prefix hit {c['prefix_hit']}" if c["prefix_hit"] else ""))
        print(f"  connector      : {r['connector']} (shim substitute: {bool(r['substituted'])}, layout "
              f"{r['layout_seen']})")
        print(f"  tokens         : stored {r['stored']}, lookup hit {r['hit']}, retrieved {r['retrieved']}")
        print(f"  bit-exact      : {r['bit_exact']} (torch.equal on restored slots); nothing written elsewhere: "
              f"{r['untouched_elsewhere']}")
        print(f"  device syncs   : store mark_step {s['mark_step_calls']} / synchronize {s['synchronize_calls']}; "
              f"retrieve mark_step {t['mark_step_calls']} / synchronize {t['synchronize_calls']} "
              f"(LMCache 0.5.6's own HPU connector: 2 and L+1 mark_steps, 1 synchronize, per chunk)")
        print(f"  transfers      : D2H {s['d2h_bytes']} B in {s['d2h_copies']} copies, "
              f"H2D {t['h2d_bytes']} B in {t['h2d_copies']} copies")
    print("  audit of redirected call sites (HPU_SHIM_REPORT, merged):")
    print("    " + render_table(merge(read_jsonl(report))).replace("\n", "\n    "))
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


def main(args: argparse.Namespace | None = None) -> int:

    from ..audit import merge, read_jsonl, render_table

    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "audit.jsonl")
        if args is not None and getattr(args, "lmcache", None):
            return _run_lmcache(args.lmcache, report)
        pkg_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_demo_pkg")
        from ..testing.results import run_child

        child = run_child([sys.executable, "-c", _CHILD], env=_child_env(report, "kvdemo", pkg_dir), timeout=600)
        if child.returncode != 0 or len(child.results) != 1:
            print(child.diagnostics(), file=sys.stderr)
            print("demo FAILED", file=sys.stderr)
            return 1
        r = child.results[0]
        c = r["counters"]
        print("hpu_shim demo: CUDA-only package `kvdemo` on the emulated HPU (hpu_shim.testing), unmodified")
        print(f"  shim           : {r['status']}")
        print(f"  KV lives on    : {r['device']} ({r['props'][0]}, {r['props'][1] / 2**30:.0f} GiB)")
        print(f"  tokens         : stored {r['tokens_stored']}, retrieved {r['tokens_retrieved']}")
        print(f"  bit-exact      : {r['bit_exact']} (torch.equal on restored slots); "
              f"nothing written elsewhere: {r['untouched_elsewhere']}")
        print(f"  device syncs   : mark_step {c['mark_step_calls']}, torch.hpu.synchronize {c['synchronize_calls']}, "
              f"stream.synchronize {c['stream_synchronize_calls']}")
        print(f"  transfers      : H2D {c['h2d_bytes']} B in {c['h2d_copies']} copies, "
              f"D2H {c['d2h_bytes']} B in {c['d2h_copies']} copies")
        print("  audit (HPU_SHIM_REPORT, merged):")
        print("    " + render_table(merge(read_jsonl(report))).replace("\n", "\n    "))
        ok = r["bit_exact"] and r["untouched_elsewhere"] and r["tokens_retrieved"] == r["tokens_stored"]
        print("demo OK" if ok else "demo FAILED")
        return 0 if ok else 1
