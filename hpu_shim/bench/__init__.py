"""``python -m hpu_shim bench``: every performance figure of the shim, against its target.

    python -m hpu_shim bench [--out DIR] [--smoke] [--envs DIR] [--max-tokens N] [--ttft PATH] [--only ID ...]

Prints one table (figure, value, target, PASS/FAIL/INFO/SKIP), and writes ``DIR/bench.json`` (every
raw number), ``DIR/bench.md`` (the table) and ``DIR/throughput.png`` (the P2 sweep; skipped with a
message when matplotlib is missing). ``--smoke`` runs the same harness at tiny sizes in well under a
minute (CI runs it so the harness cannot rot; its figures mean nothing). Exit status: 0 when every
figure was produced, whatever it says; 1 when a measurement itself broke (an ERROR row).

Sections (see each module): P1 syncs per batched call (``p1_syncs``) and G graph signatures
(``p1_graphs``) on the emulated HPU; P2 CPU throughput (``p2_throughput``); P3/P4 overheads
(``p3_overhead``); P5 import cost (``p5_import``); P6 vLLM TTFT (``p6_ttft``). Every measurement
runs in a fresh interpreter; this process only orchestrates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import config, p1_graphs, p1_syncs, p2_throughput, p3_overhead, p5_import, p6_ttft, report
from ._proc import REPO, BenchError
from .report import Row

__all__ = ["main"]

SECTIONS = (("P1", p1_syncs.run), ("G", p1_graphs.run), ("P2", p2_throughput.run), ("P3", p3_overhead.run),
            ("P5", p5_import.run), ("P6", p6_ttft.run))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hpu_shim bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output directory (default: bench-out)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, not the figures")
    p.add_argument("--envs", type=Path, default=Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs")),
                   help="directory with lmcache-<version> installs (default: $HPU_SHIM_ENVS or <repo>/.envs)")
    p.add_argument("--max-tokens", type=int, default=16384,
                   help="largest P2 size (default 16384; 32768 needs ~13 GiB free)")
    p.add_argument("--ttft", type=Path, help="vLLM TTFT result JSON (default: OUT/ttft.json)")
    p.add_argument("--shim-release", default="0.4.2", help="CUDA-only LMCache release for P1 (default 0.4.2)")
    p.add_argument("--native-release", default="0.5.6",
                   help="LMCache release with its own HPU connector and torch_ops (default 0.5.6)")
    p.add_argument("--only", nargs="+", choices=[s for s, _ in SECTIONS], help="run only these sections")
    return p


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:  # `python -m hpu_shim bench -- --smoke`: argparse.REMAINDER keeps the separator
        argv = argv[1:]
    args = _parser().parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    opts = config.options(out=out, envs=args.envs.resolve(), cache=out / "pycache", ttft=args.ttft or out / "ttft.json",
                          smoke=args.smoke, max_tokens=args.max_tokens, shim_release=args.shim_release,
                          native_release=args.native_release)
    info = report.machine()
    start = time.perf_counter()
    rows: list[Row] = []
    raw: dict = {}
    for name, run in SECTIONS:
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        begun = time.perf_counter()
        try:
            section_rows, raw[name] = run(opts)
        except (BenchError, OSError, ValueError, KeyError) as exc:
            section_rows, raw[name] = [Row(name, f"{name} harness", f"error: {exc}"[:300], "runs", "ERROR")], str(exc)
        rows.extend(section_rows)
        print(f"[bench] {name} done in {time.perf_counter() - begun:.0f} s", file=sys.stderr, flush=True)
    info["loadavg_end"] = os.getloadavg()
    wall = time.perf_counter() - start
    table = report.render(rows, info, wall)
    p2 = raw.get("P2") if isinstance(raw.get("P2"), dict) else {}
    plot = report.plot_throughput(out / "throughput.png", p2.get("sweep", []), p2.get("shape", ""))
    (out / "bench.md").write_text(table + "\n", encoding="utf-8")
    report.write_json(out / "bench.json", rows, raw, info, wall, argv)
    print(table)
    print(f"{plot}; wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 1 if any(r.status == "ERROR" for r in rows) else 0
