"""P6: vLLM time-to-first-token, cache miss vs hit, read from the TTFT benchmark's own result.

The TTFT run needs vLLM and a model and takes its own time, so it is a separate benchmark that
writes ``{"miss_s", "hit_s", "ratio", "machine"}``; this only reports the file when it exists.
"""

from __future__ import annotations

import json

from .config import Options
from .report import Row

__all__ = ["run"]


def run(opts: Options) -> tuple[list[Row], dict]:
    figure = "vLLM TTFT, LMCache miss / hit"
    if not opts.ttft.is_file():
        return [Row("P6", figure, f"not run (no {opts.ttft})", "report it", "SKIP")], {}
    data = json.loads(opts.ttft.read_text(encoding="utf-8"))
    miss, hit = float(data["miss_s"]), float(data["hit_s"])
    ratio = float(data.get("ratio") or miss / hit)
    machine = data.get("machine")
    if isinstance(machine, dict):
        machine = machine.get("cpu") or ", ".join(f"{k}={v}" for k, v in machine.items())
    prompt = f"{data['prompt_tokens']}-token prompt, " if data.get("prompt_tokens") else ""
    value = f"{ratio:.2f}x ({prompt}miss {miss:.3f} s, hit {hit:.3f} s" + (f"; {machine}" if machine else "") + ")"
    return [Row("P6", figure, value[:200], "report it", "INFO")], data
