"""Command line: ``python -m hpu_shim {doctor,report,demo,run,bench,selftest}``.

Exit codes: 0 success; 1 ``doctor`` found an error, or ``report`` found no hpu_shim record in the
file; 2 bad usage or an unreadable file (missing, a directory, no permission). ``report`` skips
lines that are not hpu_shim records (another program's output, a torn line) and says how many.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, render

    rows = diagnose(args)
    print(render(rows))
    return 1 if any(level == "error" for *_, level in rows) else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..audit import merge, read_report, render_table

    path = args.path or os.environ.get("HPU_SHIM_REPORT")
    if not path:
        print("hpu_shim report: no file given; pass PATH or set HPU_SHIM_REPORT", file=sys.stderr)
        return 2
    try:
        rows, bad = read_report(path)
    except FileNotFoundError:
        print(f"hpu_shim report: {path} does not exist; run the workload with HPU_SHIM_REPORT={path} first",
              file=sys.stderr)
        return 2
    except IsADirectoryError:
        print(f"hpu_shim report: {path} is a directory; pass the JSON-lines file HPU_SHIM_REPORT named",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hpu_shim report: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if bad:
        print(f"hpu_shim report: skipped {len(bad)} line(s) that are not hpu_shim records: "
              + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""), file=sys.stderr)
    if not rows:
        print(f"hpu_shim report: no hpu_shim records in {path}", file=sys.stderr)
        return 1
    print(render_table(merge(rows)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from .launcher import run

    return run(args.command_line)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import main as bench_main

    return bench_main(args.bench_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpu_shim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="report versions, devices and the configuration that would apply")
    from .doctor import add_arguments  # HETERO: --model/--kv-shape/--dtype/--world-size/--no-keys

    add_arguments(p)
    p.set_defaults(func=_cmd_doctor)
    p = sub.add_parser("report", help="print the merged redirect audit from HPU_SHIM_REPORT files")
    p.add_argument("path", nargs="?", help="JSON-lines file (default: $HPU_SHIM_REPORT)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("demo", help="run the shim on the emulated HPU and print what it redirected")
    p.add_argument("--lmcache", metavar="DIR", help="directory holding an LMCache release (default: toy package)")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("run", help="run a command with the shim on in it and every child (like ddtrace-run)",
                       usage="python -m hpu_shim run -- COMMAND [ARGS...]")
    p.add_argument("command_line", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("bench", help="benchmarks: syncs, transfer throughput, overheads; table + JSON + PNG",
                       add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)
    from .selftest import register as register_selftest  # EMULATOR (issue 9): python -m hpu_shim selftest

    register_selftest(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its options are the bench's own (argparse.REMAINDER drops leading "-x")
        return _cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)
