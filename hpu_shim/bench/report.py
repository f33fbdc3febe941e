"""Rows, the printed table, the JSON file and the throughput plot.

Every figure is one ``Row`` with its target and a status: PASS/FAIL against the target, INFO for
figures that are reported only, SKIP when a prerequisite is missing (said in the value), ERROR when
the harness itself broke (the bench then exits 1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Iterable

__all__ = ["Row", "machine", "mem_available", "render", "write_json", "plot_throughput", "verdict", "size"]

STATUSES = ("PASS", "FAIL", "INFO", "SKIP", "ERROR")


@dataclasses.dataclass
class Row:
    id: str
    figure: str
    value: str
    target: str
    status: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"row status {self.status!r} is not one of {STATUSES}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def size(tokens: int) -> str:
    """4096 -> "4K"; sizes that are not whole K stay as they are."""
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo(key: str) -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mem_available() -> int:
    """Bytes the kernel says can be allocated now (0 if unknown)."""
    return _meminfo("MemAvailable")


def machine() -> dict:
    """What the figures were measured on; the load average says how noisy the machine was."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"cpu": _cpuinfo(), "cores": os.cpu_count(), "ram_gib": round(_meminfo("MemTotal") / 2**30, 1),
            "python": platform.python_version(), "torch": version("torch"), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()}


def render(rows: Iterable[Row], info: dict, wall_s: float) -> str:
    rows = list(rows)
    header = ["#", "figure", "value", "target", "result"]
    cells = [[r.id, r.figure, r.value, r.target, r.status] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]

    def line(cols: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    out = [f"hpu_shim bench on {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
           f"torch {info['torch']}, Python {info['python']}; load average {_load(info)}; wall {wall_s:.0f} s",
           line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in cells)]
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(out)


def _load(info: dict) -> str:
    start = "/".join(f"{x:.1f}" for x in info["loadavg_start"])
    end = info.get("loadavg_end")
    return f"{start} at start" + (f", {'/'.join(f'{x:.1f}' for x in end)} at end" if end else "")


def write_json(path: Path, rows: list[Row], raw: dict, info: dict, wall_s: float, argv: list[str]) -> None:
    doc = {"machine": info, "argv": argv, "wall_s": wall_s, "rows": [dataclasses.asdict(r) for r in rows], "raw": raw}
    path.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")


def plot_throughput(path: Path, sweep: list[dict], shape: str) -> str:
    """PNG of GB/s against tokens for every P2 variant; returns what happened (for the log)."""
    points = [p for p in sweep if "rates" in p]
    if not points:
        return "no P2 throughput points to plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed in {sys.prefix}: skipped {path.name} (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in points[0]["rates"]:
        xs = [p["tokens"] for p in points if name in p["rates"]]
        ys = [p["rates"][name] for p in points if name in p["rates"]]
        ax.plot(xs, ys, marker="o", label=LABELS.get(name, name), linestyle="--" if name == "memcpy" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks([p["tokens"] for p in points], [size(p["tokens"]) for p in points])
    ax.set_xlabel(f"tokens per batched call ({shape})")
    ax.set_ylabel("GB/s (median)")
    ax.set_title("KV gather/scatter on CPU tensors")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


LABELS = {
    "memcpy": "memcpy bound (plain copy)",
    "shim_store": "hpu_shim gather (store)",
    "shim_retrieve": "hpu_shim scatter (retrieve)",
    "lmcache_store": "LMCache 0.5.6 torch_ops store",
    "lmcache_retrieve": "LMCache 0.5.6 torch_ops retrieve",
}
