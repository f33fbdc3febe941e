"""P6: vLLM time-to-first-token, cache miss vs hit, read from the TTFT benchmark's own results.

The TTFT runs need vLLM and a model and take their own time (``make ttft``: a 3000-token and an
8K-token prompt), so they are a separate benchmark that writes one ``ttft-*.json`` per prompt length
(``{"miss_s", "hit_s", "ratio", "prompt_tokens", "machine", ...}``); this reports every file. None
at all is a FAIL that says what to run: a figure that was not measured must not look reported.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import Options
from .report import Row

__all__ = ["run", "files"]

FIGURE = "vLLM TTFT, LMCache miss / hit"
MODE = "vLLM CPU build, HPU_SHIM_BACKEND=cpu"
PATH = ("vLLM LLM.generate (max_tokens=1) with LMCacheConnectorV1 (LMCache 0.5.6) through the shim, prefix "
        "caching off, after a warm-up request; miss = first request, hit = the same prompt again")


def files(opts: Options) -> list[Path]:
    """The TTFT results to report: ``--ttft`` paths, else every ``ttft*.json`` in the output directory."""
    return list(opts.ttft) if opts.ttft else sorted(opts.out.glob("ttft*.json"))


def _row(path: Path) -> tuple[Row, dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    miss, hit = float(data["miss_s"]), float(data["hit_s"])
    ratio = float(data.get("ratio") or miss / hit)
    machine = data.get("machine")
    if isinstance(machine, dict):
        machine = machine.get("cpu") or ", ".join(f"{k}={v}" for k, v in machine.items())
    tokens = data.get("prompt_tokens")
    hits = data.get("hit_cached_tokens")
    figure = f"{FIGURE}, {tokens}-token prompt" if tokens else FIGURE
    value = f"{ratio:.2f}x (miss {miss:.3f} s, hit {hit:.3f} s" + (f", {hits} tokens from LMCache" if hits else "")
    load = data.get("loadavg")
    value += f"; load average {load[0][0]:.1f} -> {load[1][0]:.1f})" if load else ")"
    return Row("P6", figure, value, "report it", "INFO", mode=MODE, path=PATH, machine=str(machine or "?")), data


def run(opts: Options) -> tuple[list[Row], dict]:
    found = files(opts)
    if not found:
        return [Row("P6", FIGURE, f"not run: no ttft*.json in {opts.out} (run `make ttft` first)", "report it",
                    "FAIL", mode=MODE, path=PATH)], {}
    rows, raw = [], {}
    for path in found:
        if not path.is_file():
            rows.append(Row("P6", FIGURE, f"not run: {path} does not exist (run `make ttft`)", "report it", "FAIL",
                            mode=MODE, path=PATH))
            continue
        row, raw[path.name] = _row(path)
        rows.append(row)
    return rows, raw
