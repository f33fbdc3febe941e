"""``python -m hpu_shim demo``: a CUDA-written package run unmodified on the emulated HPU.

The child process gets the shim the way a container does (``PYTHONPATH=<sitecustomize>``,
``HPU_SHIM=1``) plus ``HPU_SHIM_FAKE_HPU=1`` for the emulator, stores and retrieves KV through
CUDA-only code, and the parent prints the verdict, device sync counts and the merged audit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
print("RESULT " + json.dumps(result))
"""


def _child_env(report: str) -> dict:
    from ._activation import bootstrap_dir

    pkg_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_demo_pkg")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM")}
    env.update(HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1", HPU_SHIM_BACKEND="hpu", HPU_SHIM_SCOPE="kvdemo",
               HPU_SHIM_REPORT=report, PT_HPU_LAZY_MODE=os.environ.get("PT_HPU_LAZY_MODE", "1"))
    env["PYTHONPATH"] = os.pathsep.join([bootstrap_dir(), pkg_dir, root, os.environ.get("PYTHONPATH", "")])
    return env


def main(args: argparse.Namespace | None = None) -> int:
    import json

    from ._audit import merge, read_jsonl, render_table

    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "audit.jsonl")
        proc = subprocess.run([sys.executable, "-c", _CHILD], env=_child_env(report), capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            print("demo FAILED", file=sys.stderr)
            return 1
        r = json.loads(lines[-1][len("RESULT "):])
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
