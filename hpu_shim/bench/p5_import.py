"""P5: import cost, ``import lmcache.v1.cache_engine`` with vs without the shim, fresh processes.

"With" is the container set-up (sitecustomize + ``HPU_SHIM=1``, cpu backend), so the bootstrap is
paid too; "without" has no shim on the path at all. Each process is timed whole, from the parent,
and leaves with ``os._exit`` so LMCache's threads do not add a teardown. Runs alternate, and both
sides import from the same warm bytecode cache; the shim keeps its rewritten bytecode under its own
pyc tag, so its first import rewrites and compiles every in-scope module once: the full run also
times that, with a fresh cache (plain first, so only the shim's own bytecode is cold).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import _proc
from .config import Options
from .report import Row, median, verdict

__all__ = ["run"]

MAX_RATIO = 1.10
MODE = "cpu backend, fresh processes"
PATH = "python -c 'import <module>' with sitecustomize + HPU_SHIM=1 vs without the shim, same warm bytecode cache"


def _seconds(module: str, environ: dict) -> float:
    code = f"import os, {module}; os._exit(0)"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise _proc.BenchError(f"import {module} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return elapsed


def _envs(release: Path, cache: Path) -> dict:
    from ..runtime.runtime import bootstrap_dir

    return {"plain": _proc.env([release], cache),
            "shim": _proc.env([bootstrap_dir(), release], cache, HPU_SHIM="1", HPU_SHIM_BACKEND="cpu")}


def run(opts: Options) -> tuple[list[Row], dict]:
    figure = f"import {opts.import_module} (LMCache {opts.native_release}), shim / plain"
    target = f"<= {MAX_RATIO:.2f}x"
    release = _proc.release(opts.envs, opts.native_release)
    if release is None:
        return [Row("P5", figure, f"not run: LMCache {opts.native_release} is not installed in {opts.envs} "
                                  f"(make lmcache-envs)", target, "FAIL", mode=MODE, path=PATH)], {}
    raw: dict = {"module": opts.import_module, "release": opts.native_release}
    if not opts.smoke:
        with tempfile.TemporaryDirectory(prefix="hpu-shim-pyc-") as fresh:
            cold = _envs(release, Path(fresh))
            raw["cold"] = {side: _seconds(opts.import_module, cold[side]) for side in ("plain", "shim")}
    warm = _envs(release, opts.cache)
    for side in ("plain", "shim"):
        _seconds(opts.import_module, warm[side])  # fills the shared cache if this is its first use
    times: dict[str, list[float]] = {"plain": [], "shim": []}
    for _ in range(opts.import_pairs):
        for side in ("plain", "shim"):
            times[side].append(_seconds(opts.import_module, warm[side]))
    raw["warm"] = times
    ratio = median([s / p for p, s in zip(times["plain"], times["shim"])])
    value = (f"{ratio:.2f}x (median of {opts.import_pairs} pairs: plain {median(times['plain']):.2f} s, "
             f"shim {median(times['shim']):.2f} s, warm caches)")
    if "cold" in raw:
        value += f"; first shim import {raw['cold']['shim']:.1f} s (rewrites + compiles, cached after)"
    return [Row("P5", figure, value, target, verdict(ratio <= MAX_RATIO), mode=MODE, path=PATH)], raw
