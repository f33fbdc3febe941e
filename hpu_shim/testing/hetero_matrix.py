"""Which producer release can feed which consumer release: measured, printed as a table.

    python -m hpu_shim.testing.hetero_matrix [--envs .envs] [0.3.7 0.4.2 0.4.3 0.5.6]

For each producer release P, one producer process (cpu backend, standard 5-D layout, block size 16)
stores the same 1024 tokens into its own ``fs://`` directory; then for each consumer release C, one
consumer process (emulated HPU, vllm-gaudi layout, block size 128) looks up and retrieves every P's
directory. A cell is ``1024 bit-exact`` when C restored all tokens with ``torch.equal`` (and nothing
else written), else the reason the keys did not meet: the key *format* (0.3.x names a chunk
``fmt@model@world@worker@hash``, >= 0.4 ``model@world@worker@hash@dtype``) or the chunk *hash*
(0.3.x hashes ``(prefix, tokens, None)``, >= 0.4 ``(prefix, tokens, ())``). Both sides run with
``PYTHONHASHSEED=0`` and hpu_shim (so 0.3.x keys are deterministic). ``docs/hetero.md`` has the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from .hetero_run import ROOT, env_for
from .results import run_child

__all__ = ["measure", "render", "main", "VERSIONS"]

VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")


def _split(key: str) -> tuple[str, str]:
    """(format, chunk hash) of an LMCache key string."""
    parts = key.split("@")
    if len(parts) >= 5 and parts[0] in ("vllm", "huggingface", "sglang"):  # 0.3.x: fmt@model@ws@wid@hash
        return "0.3.x", parts[4]
    return ">=0.4", parts[3] if len(parts) > 3 else key


def _why(stored: list[str], wanted: list[str]) -> str:
    if not stored or not wanted:
        return "no keys"
    (sf, sh), (wf, wh) = _split(stored[0]), _split(wanted[0])
    if sf != wf:
        return "key format differs (same chunk hash)" if sh == wh else "key format and chunk hash differ"
    if sh != wh:
        return "chunk hash differs"
    return "same keys"


def measure(versions: list[str], envs: str, workdir: str, timeout: float = 900) -> dict:
    """{(producer, consumer): consumer result} plus {"_produce": {producer: result}}."""
    out: dict = {"_produce": {}}
    for p in versions:
        store = os.path.join(workdir, f"store-{p}")
        os.makedirs(store, exist_ok=True)
        spec = dict(role="produce", url=f"fs://localhost:0{store}", reference=os.path.join(workdir, f"ref-{p}.pt"),
                    layout="standard", block_size=16, seed=0)
        child = run_child([sys.executable, "-m", "hpu_shim.testing.hetero", json.dumps([spec])],
                          env=env_for(p, envs, "produce"), timeout=timeout)
        out["_produce"][p] = child.results[0] if child.results else {"error": child.diagnostics(2000)}
    for c in versions:
        specs = [dict(role="consume", url=f"fs://localhost:0{os.path.join(workdir, f'store-{p}')}",
                      reference=os.path.join(workdir, f"ref-{p}.pt"), layout="kv_tuple", block_size=128, seed=0)
                 for p in versions]
        child = run_child([sys.executable, "-m", "hpu_shim.testing.hetero", json.dumps(specs)],
                          env=env_for(c, envs, "consume"), timeout=timeout)
        results = child.results if len(child.results) == len(versions) else \
            [{"error": child.diagnostics(2000)}] * len(versions)
        for p, result in zip(versions, results):
            out[(p, c)] = result
    return out


def cell(stored: dict, got: dict) -> str:
    if "error" in got or "error" in stored:
        return "error: " + str(got.get("error") or stored.get("error"))[:60]
    if got.get("retrieved") and got.get("equals_expected"):
        return f"{got['retrieved']} bit-exact"
    if got.get("retrieved"):
        return f"{got['retrieved']} NOT bit-exact"
    return f"miss: {_why(stored.get('chunk_keys') or [], got.get('chunk_keys') or [])}"


def render(results: dict, versions: list[str]) -> str:
    head = ["producer \\ consumer", *versions]
    rows = [[p, *(cell(results["_produce"][p], results[(p, c)]) for c in versions)] for p in versions]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.hetero_matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", default=list(VERSIONS))
    parser.add_argument("--envs", default=os.path.join(ROOT, ".envs"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpu-shim-hetero-matrix-") as tmp:
        results = measure(args.versions, args.envs, tmp)
    print(render(results, args.versions))
    print(f"\n(fs:// store, 1024 tokens, chunk 256, PYTHONHASHSEED=0, hpu_shim on both sides; "
          f"{time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
