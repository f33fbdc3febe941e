"""``make matrix``: the store/lookup/retrieve check over every LMCache release, one table per mode.

    python -m hpu_shim.testing.matrix --envs .envs --mode both 0.3.1 0.3.2 ... 0.5.6

Each release runs in its own interpreter on the emulated HPU through the shim, once per execution
mode (``--mode eager``: ``PT_HPU_LAZY_MODE=0``, Gaudi's current default; ``lazy``: ``=1``; ``both``,
the default), with vllm-gaudi's ``TensorTuple`` layout, bf16, 1000 tokens and a vLLM-style slot mapping
(``CASE``).  Columns: version, PASS/FAIL, tokens restored, device syncs per store and per
retrieve written ``mark_step/synchronize`` (in eager mode ``mark_step`` is a no-op the bridge still
lets code call), host bytes staged through the bounce buffer per store+retrieve, CPU fallbacks,
the connector that moved the KV, and the error if any.  Exit code 0 only if every release passes
in every mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main", "run_release"]

#: vllm-gaudi's layout and a vLLM-style slot mapping (whole-block runs, the last block partly filled): what
#: a Gaudi user's engine calls see. Random per-token slot mappings (every call redone per token) are the
#: test suite's.
CASE = {"layout": "kv_tuple", "dtype": "bfloat16", "tokens": 1000, "save_unfull_chunk": True, "slots": "paged"}
MODES = {"eager": "0", "lazy": "1"}  # mode -> PT_HPU_LAZY_MODE


def run_release(version: str, envs: str, case: dict = CASE, mode: str = "lazy") -> dict:
    from ..runtime.runtime import bootstrap_dir

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(envs, f"lmcache-{version}")
    if not os.path.isfile(os.path.join(path, "lmcache", "__init__.py")):
        return {"version": version, "mode": mode, "error": f"not installed in {path} (run .ci/lmcache-envs.sh)"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM")}
    env.update(PYTHONPATH=os.pathsep.join([bootstrap_dir(), path, root]), HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1",
               HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE=MODES[mode], LMCACHE_TRACK_USAGE="false",
               PYTHONHASHSEED="0")
    start = time.perf_counter()
    from .results import run_child

    child = run_child([sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps([case])],
                      env=env, timeout=900)
    if not child.results:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return {"version": version, "mode": mode, "error": tail[:200], "seconds": time.perf_counter() - start}
    result = child.results[-1]
    result.update(version=version, mode=mode, seconds=time.perf_counter() - start)
    return result


def _row(r: dict) -> list[str]:
    ok = "error" not in r and r.get("bit_exact") and r.get("untouched_elsewhere") and r.get("retrieved", 0) > 0
    s, t = r.get("store_counts") or {}, r.get("retrieve_counts") or {}
    store_syncs = f"{s.get('mark_step_calls')}/{s.get('synchronize_calls')}"
    retrieve_syncs = f"{t.get('mark_step_calls')}/{t.get('synchronize_calls')}"
    syncs = (store_syncs, retrieve_syncs) if s else ("-", "-")
    bounce = str(s.get("bounce_buffer_bytes", 0) + t.get("bounce_buffer_bytes", 0)) if s else "-"
    fallbacks = str(s.get("cpu_fallbacks", 0) + t.get("cpu_fallbacks", 0)) if s else "-"
    connector = r.get("connector") or "-"
    kind = "shim" if r.get("substituted") and "layout" not in str(r.get("substituted")) else "native"
    return [r["version"], "PASS" if ok else "FAIL", str(r.get("retrieved", "-")), syncs[0], syncs[1], bounce,
            fallbacks, f"{connector.rsplit('.', 1)[-1]} ({kind})" if connector != "-" else "-",
            (r.get("error") or "")[:90]]


HEADER = ["version", "result", "tokens restored", "store mark_step/synchronize",
          "retrieve mark_step/synchronize", "bounce bytes", "CPU fallbacks", "connector", "error"]


def render(results: list[dict], mode: str | None = None) -> str:
    """One table (all rows of one mode), with a title line naming the mode when given."""
    header = HEADER
    rows = [_row(r) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def fmt(cols: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]
    passed = sum(r[1] == "PASS" for r in rows)
    lines.append(f"{passed} passed, {len(rows) - passed} failed")
    if mode is not None:
        lines.insert(0, f"mode: {mode} (PT_HPU_LAZY_MODE={MODES[mode]})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.matrix", description=__doc__)
    parser.add_argument("--envs", default=".envs", help="directory with lmcache-<version> installs")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--mode", choices=("eager", "lazy", "both"), default="both",
                        help="execution mode(s) to run every release in (default: both, one table each)")
    parser.add_argument("versions", nargs="+")
    args = parser.parse_args(argv)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        for version in args.versions:
            r = run_release(version, args.envs, mode=mode)
            done = "error: " + r["error"][:80] if "error" in r else "retrieved " + str(r.get("retrieved"))
            print(f"  {mode} {version}: {done}", file=sys.stderr, flush=True)
            results.append(r)
    print("\n\n".join(render([r for r in results if r["mode"] == mode], mode) for mode in modes))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0 if all(_row(r)[1] == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
