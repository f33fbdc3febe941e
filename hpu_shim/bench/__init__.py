"""``python -m hpu_shim bench``: every performance figure of the shim, against its target.

    python -m hpu_shim bench [--out DIR] [--smoke] [--envs DIR] [--max-tokens N] [--ttft PATH ...]
                             [--only ID ...] [--publish DIR]
    python -m hpu_shim bench --render DIR/bench.json [--publish DIR]

Prints one table (figure, mode, path, machine, value, target, PASS/FAIL/INFO) and writes
``DIR/bench.json`` (every raw number), ``DIR/bench.md`` (the table), ``DIR/README.md`` (the
benchmark page, generated from ``bench.json`` by ``readme``) and ``DIR/throughput.png`` (the P2
sweep, when matplotlib is installed). ``--publish benchmarks`` also writes ``benchmarks/bench.json``
and ``benchmarks/README.md`` (what ``make bench`` does), so the page in the repository is always
the rendering of a run and cannot go stale; ``--render`` re-renders a page from a ``bench.json``
without measuring. ``--smoke`` runs the same harness at tiny sizes (CI runs it so the harness
cannot rot; its figures mean nothing). Exit status: 0 when every figure was produced, whatever it
says; 1 when a measurement harness itself broke (an ERROR row).

Sections (see each module): P1 syncs per batched call (``p1_syncs``), G compiles over prompt lengths
(``g_graphs``), P2 throughput through LMCache's engine (``p2_throughput``), P3/P4 overheads
(``p3_overhead``), P5 import cost (``p5_import``), P6 vLLM TTFT (``p6_ttft``). Every measurement
runs in a fresh interpreter; this process only orchestrates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import config, g_graphs, p1_syncs, p2_throughput, p3_overhead, p5_import, p6_ttft, readme, report
from ._proc import REPO, BenchError
from .report import Row

__all__ = ["main", "SECTIONS"]

#: section id -> its runner; P3 also produces the P4 rows.
SECTIONS = {"P1": p1_syncs.run, "G": g_graphs.run, "P2": p2_throughput.run, "P3": p3_overhead.run,
            "P5": p5_import.run, "P6": p6_ttft.run}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hpu_shim bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output directory (default: bench-out)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, not the figures")
    p.add_argument("--envs", type=Path, default=Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs")),
                   help="directory with lmcache-<version> installs (default: $HPU_SHIM_ENVS or <repo>/.envs)")
    p.add_argument("--max-tokens", type=int, help="largest P2 size to run (default: all, up to 64K tokens)")
    p.add_argument("--ttft", type=Path, nargs="+", help="vLLM TTFT result JSONs (default: OUT/ttft*.json)")
    p.add_argument("--native-release", default="0.5.6",
                   help="LMCache release with its own HPU connector and torch_ops (default 0.5.6)")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--publish", type=Path, help="also write DIR/bench.json and DIR/README.md (make bench: benchmarks); "
                   "with --only, only those sections' rows are replaced in DIR/bench.json")
    p.add_argument("--render", type=Path, metavar="BENCH_JSON", help="only render README.md from this bench.json")
    return p


def _render_only(source: Path, publish: Path | None) -> int:
    doc = json.loads(source.read_text(encoding="utf-8"))
    target = (publish or source.parent) / "README.md"
    target.write_text(readme.render(doc), encoding="utf-8")
    print(f"wrote {target} from {source}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:  # `python -m hpu_shim bench -- --smoke`: argparse.REMAINDER keeps the separator
        argv = argv[1:]
    args = _parser().parse_args(argv)
    if args.render:
        return _render_only(args.render, args.publish)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    opts = config.options(smoke=args.smoke, max_tokens=args.max_tokens, out=out, envs=args.envs.resolve(),
                          cache=out / "pycache", ttft=tuple(p.resolve() for p in args.ttft or ()),
                          native_release=args.native_release)
    info = report.machine()
    info["run"] = "smoke (harness check: the figures mean nothing)" if args.smoke else "full"
    start = time.perf_counter()
    rows: list[Row] = []
    raw: dict = {}
    for name, run in SECTIONS.items():
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
    doc = report.write_json(out / "bench.json", rows, raw, info, wall, argv)
    (out / "README.md").write_text(readme.render(doc), encoding="utf-8")
    (out / "readme-table.md").write_text(readme.readme_table(doc) + "\n", encoding="utf-8")
    if args.publish:
        if args.only:  # re-measured sections replace theirs in the published run; the rest stays
            doc = readme.merge_sections(args.publish / "bench.json", doc, args.only)
        readme.publish(doc, args.publish, {str(opts.envs): "<envs>", str(out): "<out>"}, REPO / "README.md")
    print(table)
    print(f"{plot}; wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'README.md'}"
          + (f"; published to {args.publish}" if args.publish else ""))
    return 1 if any(r.status == "ERROR" for r in rows) else 0
