"""Rows, the printed table, the JSON file and the throughput plot.

Every figure is one ``Row`` with its target and a status: PASS/FAIL against the target, INFO for
figures that are only reported (never a figure that has a target), FAIL also when a prerequisite is
missing (said in the value: a figure that was not measured must not look like one that passed), and
ERROR when the harness itself broke (the bench then exits 1). Each row also states the mode it ran in
and the path it measured; the machine is the run's unless the row says otherwise (P6 reads its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["Row", "machine", "machine_line", "mem_available", "median", "render", "write_json", "plot_throughput",
           "verdict", "size", "STATUSES"]

STATUSES = ("PASS", "FAIL", "INFO", "ERROR")


@dataclasses.dataclass
class Row:
    id: str
    figure: str
    value: str
    target: str
    status: str
    mode: str = ""  # e.g. "emulated HPU, lazy", "cpu backend", "host CPU"
    path: str = ""  # what code the figure went through, e.g. "LMCache 0.5.6 engine.store -> <connector>"
    machine: str = ""  # empty: the run's machine

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"row status {self.status!r} is not one of {STATUSES}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median(xs: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count): the one used for every figure."""
    if not xs:
        raise ValueError("median of no values")
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


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


def machine_line(info: dict) -> str:
    """The short machine description every row carries: CPU model, cores, RAM."""
    return f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']:g} GiB"


def _cells(rows: list[Row], info: dict) -> list[list[str]]:
    here = machine_line(info)
    return [[r.id, r.figure, r.mode or "-", r.path or "-", r.machine or here, r.value, r.target, r.status]
            for r in rows]


HEADER = ["#", "figure", "mode", "path", "machine", "value", "target", "result"]


def render(rows: Iterable[Row], info: dict, wall_s: float) -> str:
    """The table printed to the terminal and written to ``bench.md``: every row with its mode, path, machine."""
    rows = list(rows)
    cells = _cells(rows, info)
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(HEADER)]

    def line(cols: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    out = [title(info, wall_s), "", line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
           *(line(c) for c in cells), "", summary(rows)]
    return "\n".join(out)


def title(info: dict, wall_s: float) -> str:
    return (f"hpu_shim bench on {machine_line(info)} RAM, torch {info['torch']}, Python {info['python']}; "
            f"load average {_load(info)}; wall {wall_s:.0f} s")


def summary(rows: Iterable[Row]) -> str:
    rows = list(rows)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _load(info: dict) -> str:
    start = "/".join(f"{x:.1f}" for x in info["loadavg_start"])
    end = info.get("loadavg_end")
    return f"{start} at start" + (f", {'/'.join(f'{x:.1f}' for x in end)} at end" if end else "")


def write_json(path: Path, rows: list[Row], raw: dict, info: dict, wall_s: float, argv: list[str]) -> dict:
    doc = {"machine": info, "argv": argv, "wall_s": wall_s, "rows": [dataclasses.asdict(r) for r in rows], "raw": raw}
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def rows_of(doc: dict) -> list[Row]:
    """The rows of a ``bench.json`` document."""
    return [Row(**r) for r in doc["rows"]]


def plot_throughput(path: Path, sweep: list[dict], shape: str) -> str:
    """PNG of GB/s against tokens for every P2 path; returns what happened (for the log)."""
    points = [p for p in sweep if p.get("rates")]
    if not points:
        return "no P2 throughput points to plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed in {sys.prefix}: no {path.name} (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(8, 4.8))
    series: dict[str, list[tuple[int, float]]] = {}
    for p in points:
        for name, rate in p["rates"].items():
            series.setdefault(f"{p['platform']}: {name}", []).append((p["tokens"], rate))
    for label, xy in series.items():
        xy.sort()
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label,
                linestyle="--" if "memcpy" in label else "-")
    ticks = sorted({p["tokens"] for p in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [size(t) for t in ticks])
    ax.set_xlabel(f"tokens per batched call ({shape})")
    ax.set_ylabel("GB/s (median)")
    ax.set_title("KV store / retrieve through LMCache's engine")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"
