"""``make matrix``: the store/lookup/retrieve check over every LMCache release, as a table.

    python -m hpu_shim.testing.matrix --envs .envs 0.3.1 0.3.2 ... 0.5.6

Each release runs in its own interpreter on the emulated HPU through the shim (lazy mode), with
the same case as the test suite's main one (vllm-gaudi ``TensorTuple`` layout, bf16, 1000 tokens).
Columns: version, PASS/FAIL, tokens restored, device syncs per store and per retrieve
(``mark_step``/``synchronize``), the connector that moved the KV, and the error if any.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main", "run_release"]

CASE = {"layout": "kv_tuple", "dtype": "bfloat16", "tokens": 1000, "save_unfull_chunk": True}


def run_release(version: str, envs: str, case: dict = CASE) -> dict:
    from ..runtime.runtime import bootstrap_dir

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(envs, f"lmcache-{version}")
    if not os.path.isfile(os.path.join(path, "lmcache", "__init__.py")):
        return {"version": version, "error": f"not installed in {path} (run .ci/lmcache-envs.sh)"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM")}
    env.update(PYTHONPATH=os.pathsep.join([bootstrap_dir(), path, root]), HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1",
               HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE="1", LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0")
    start = time.perf_counter()
    from .results import run_child

    child = run_child([sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps([case])],
                      env=env, timeout=900)
    if not child.results:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return {"version": version, "error": tail[:200], "seconds": time.perf_counter() - start}
    result = child.results[-1]
    result.update(version=version, seconds=time.perf_counter() - start)
    return result


def _row(r: dict) -> list[str]:
    ok = "error" not in r and r.get("bit_exact") and r.get("untouched_elsewhere") and r.get("retrieved", 0) > 0
    s, t = r.get("store_counts", {}), r.get("retrieve_counts", {})
    syncs = (f"{s.get('mark_step_calls')}/{s.get('synchronize_calls')}", f"{t.get('mark_step_calls')}/"
             f"{t.get('synchronize_calls')}") if s else ("-", "-")
    connector = r.get("connector") or "-"
    kind = "shim" if r.get("substituted") and "layout" not in str(r.get("substituted")) else "native"
    return [r["version"], "PASS" if ok else "FAIL", str(r.get("retrieved", "-")), syncs[0], syncs[1],
            f"{connector.rsplit('.', 1)[-1]} ({kind})" if connector != "-" else "-",
            (r.get("error") or "")[:90]]


def render(results: list[dict]) -> str:
    header = ["version", "result", "tokens restored", "store ms/sync", "retrieve ms/sync", "connector", "error"]
    rows = [_row(r) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = lambda cols: "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"  # noqa: E731
    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]
    passed = sum(r[1] == "PASS" for r in rows)
    lines.append(f"{passed} passed, {len(rows) - passed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.matrix", description=__doc__)
    parser.add_argument("--envs", default=".envs", help="directory with lmcache-<version> installs")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("versions", nargs="+")
    args = parser.parse_args(argv)
    results = []
    for version in args.versions:
        r = run_release(version, args.envs)
        print(f"  {version}: {'error: ' + r['error'][:80] if 'error' in r else 'retrieved ' + str(r['retrieved'])}",
              file=sys.stderr, flush=True)
        results.append(r)
    print(render(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0 if all(_row(r)[1] == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
