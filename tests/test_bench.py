"""``python -m hpu_shim bench``: the harness runs end to end at smoke sizes and reports every row with
its mode and path, a missing prerequisite is a FAIL row (never a skip), and the benchmark page is the
rendering of its JSON. (The kernels behind the extra P2 row are tested in tests/transfer/.)

The figures themselves are not asserted: they are timings on shared, noisy machines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import REPO, clean_env
from hpu_shim.bench import _proc, config, p1_syncs, p2_throughput, readme, report

ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))
SMOKE = config.SMOKE

#: (section, start of the figure) of every row the smoke run prints, in order.
SMOKE_ROWS = [
    *[("P1", f"syncs per batched {phase}, {report.size(t)} tokens") for _ in p1_syncs.MODES
      for _ in SMOKE.p1_releases for t in SMOKE.p1_tokens for phase in ("store", "retrieve")],
    *[("G", f"{kind}-graph signatures (lazy), slot mapping on the {where}")
      for where in ("device", "host") for kind in ("transfer", "index")],
    *[("G", f"compiles (eager), slot mapping on the {where}") for where in ("device", "host")],
    *[("P2", f"{d} ({p2_throughput.DIRECTIONS[d]}), {report.size(t)} tokens") for _ in SMOKE.p2_platforms
      for t in SMOKE.p2_tokens for d in ("store", "retrieve")],
    ("P2", "store kernel only"), ("P2", "retrieve kernel only"),
    ("P3", "(a) torch.cuda attributes"), ("P3", "(b) Tensor.to"), ("P3", "(c) Tensor.cuda called out of scope"),
    ("P3", "(c) Tensor.cuda class-patch designs"), ("P4", "in-scope torch.cuda.current_device()"),
    ("P4", "torch.cuda.current_device() proxy designs"), ("P5", "import lmcache"), ("P6", "vLLM TTFT"),
]


def run_bench(out: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpu_shim", "bench", "--", "--out", str(out), *args],
                          env=clean_env(PYTHONPATH=str(REPO)), cwd=out, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    (out / "ttft-3000.json").write_text(json.dumps({"miss_s": 2.0, "hit_s": 0.5, "ratio": 4.0, "prompt_tokens": 3000,
                                                     "hit_cached_tokens": 2816, "machine": "test"}))
    proc = run_bench(out, "--smoke", "--envs", str(ENVS))
    return proc, out, json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else None


@pytest.mark.lmcache
def test_smoke_run_prints_every_row_with_its_mode_and_path(smoke):
    proc, out, doc = smoke
    assert proc.returncode == 0 and doc is not None, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = [(r["id"], r["figure"]) for r in doc["rows"]]
    assert len(rows) == len(SMOKE_ROWS), rows
    for (section, figure), (want_section, want_start) in zip(rows, SMOKE_ROWS):
        assert section == want_section and figure.startswith(want_start), (section, figure)
        assert figure in proc.stdout
    assert {r["status"] for r in doc["rows"]} <= {"PASS", "FAIL", "INFO"}  # no harness error
    assert all(r["value"] and r["target"] and r["mode"] and r["path"] for r in doc["rows"])
    assert (out / "bench.md").read_text().strip() in proc.stdout
    assert {"cpu", "cores", "ram_gib", "torch", "run"} <= set(doc["machine"])
    assert doc["machine"]["run"].startswith("smoke")
    assert (out / "throughput.png").is_file() or "matplotlib is not installed" in proc.stdout


@pytest.mark.lmcache
def test_smoke_run_drives_the_releases_and_both_paths(smoke):
    _, _, doc = smoke
    by_section = lambda s: [r for r in doc["rows"] if r["id"] == s]  # noqa: E731
    p1 = by_section("P1")
    assert [(r["mode"], r["path"].split(" engine.")[0]) for r in p1] == [
        (f"emulated HPU, {m}", f"LMCache {v}") for m in p1_syncs.MODES for v in SMOKE.p1_releases
        for _ in SMOKE.p1_tokens for _ in ("store", "retrieve")]
    assert all(r["status"] == "PASS" for r in p1), p1  # sync counts do not depend on size: they hold in smoke
    assert all("launches /" in r["value"] and "waits" in r["value"] for r in p1), p1
    engine_rows = [r for r in by_section("P2") if "kernel only" not in r["figure"]]
    assert [r["mode"] for r in engine_rows] == [p2_throughput.PLATFORMS[p].label for p in SMOKE.p2_platforms
                                                for _ in SMOKE.p2_tokens for _ in ("store", "retrieve")]
    for r in engine_rows:  # measured through the engine, against memcpy and LMCache's own path, exact
        assert "x memcpy" in r["value"] and "x LMCache's own" in r["value"], r
        assert "; bit-exact" in r["value"] and "not bit-exact" not in r["value"], r
        assert "slot mapping on the device" in r["path"] and "engine." in r["path"]
    points = doc["raw"]["P2"]["sweep"]
    assert {p["platform"] for p in points} == set(SMOKE.p2_platforms)
    assert all(all(p["exact"].values()) for p in points)
    assert all(len(p["times"]["own_store"]) == SMOKE.p2_own_rounds for p in points)
    assert by_section("P5")[0]["value"][0].isdigit()  # measured, not "not run"
    p6 = by_section("P6")
    assert len(p6) == 1 and p6[0]["status"] == "INFO" and "4.00x" in p6[0]["value"] and p6[0]["machine"] == "test"


@pytest.mark.lmcache
def test_generated_page_is_the_rendering_of_the_json(smoke):
    _, out, doc = smoke
    assert (out / "README.md").read_text() == readme.render(doc)
    table = (out / "readme-table.md").read_text()
    assert table.strip() == readme.readme_table(doc)
    for row in doc["rows"]:  # every row is in the README table, merged with its other sizes
        assert readme._SIZE.sub("", row["figure"]) in table and row["mode"] in table and row["path"] in table
    assert readme.README_BEGIN in (out / "README.md").read_text()


def test_readme_table_merges_sizes_and_keeps_the_worst_result():
    rows = [report.Row("P2", f"store (device -> host), {n} tokens = 0.50 GiB", f"v{n}", "t", s, "m", "p")
            for n, s in (("4K", "PASS"), ("16K", "FAIL"))] + [report.Row("P5", "import", "1.0x", "t", "PASS", "m", "p")]
    doc = {"machine": {"cpu": "cpu", "cores": 2, "ram_gib": 8}, "rows": [dataclasses.asdict(r) for r in rows]}
    lines = readme.readme_table(doc).splitlines()
    assert len(lines) == 4 and "| store (device -> host) |" in lines[2] and "4K: v4K; 16K: v16K" in lines[2]
    assert lines[2].endswith("| FAIL |") and lines[3].endswith("| PASS |") and "cpu, 2 cores, 8 GiB" in lines[3]


def test_committed_benchmark_page_matches_its_json():
    """benchmarks/README.md is generated from benchmarks/bench.json: it cannot go stale or be edited by hand."""
    committed = json.loads((REPO / "benchmarks" / "bench.json").read_text())
    assert (REPO / "benchmarks" / "README.md").read_text() == readme.render(committed)
    assert committed["machine"]["run"] == "full"
    assert not re.search(r"/(tmp|work|home|root)/", json.dumps(committed))  # no machine paths in the repository
    ids = {r["id"] for r in committed["rows"]}
    assert {"P1", "G", "P2", "P3", "P4", "P5", "P6"} <= ids
    top = (REPO / "README.md").read_text()  # the top-level README shows the same run's table
    assert readme.with_table(top, committed) == top


def test_missing_prerequisites_are_fail_rows_that_say_what_to_run(tmp_path):
    empty = tmp_path / "no-envs"
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    proc = run_bench(out, "--smoke", "--envs", str(empty), "--only", "P5", "P6", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["id"], r["status"]) for r in rows] == [("P5", "FAIL"), ("P6", "FAIL")]
    assert "not run" in rows[0]["value"] and "make lmcache-envs" in rows[0]["value"]
    assert "not run" in rows[1]["value"] and "make ttft" in rows[1]["value"]


def test_p2_size_that_cannot_fit_is_a_fail_row_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "mem_available", lambda: 3 << 30)  # 3 GiB free
    opts = config.options(smoke=False, max_tokens=65536, out=tmp_path, envs=ENVS, cache=tmp_path / "pycache")
    opts = dataclasses.replace(opts, p2_tokens=(65536,), p2_platforms=("cpu",))
    monkeypatch.setattr(p2_throughput, "_kernel_rows", lambda opts, raw: [])
    monkeypatch.setattr(_proc, "run_child", lambda *a, **k: pytest.fail("a size that cannot fit must not run"))
    rows, raw = p2_throughput.run(opts)
    assert [(r.figure.split(",")[0], r.status) for r in rows] == [("store (device -> host)", "FAIL"),
                                                                  ("retrieve (host -> device)", "FAIL")]
    need = sum(p2_throughput._need(65536, 32).values()) / 2**30
    assert all(f"cannot fit: needs {need:.1f} GiB" in r.value and "3.0 GiB available" in r.value for r in rows), rows
    assert raw["failed"] and "64K tokens = 8.00 GiB" in rows[0].figure


def test_p1_names_counters_the_emulator_lacks():
    t = p1_syncs.tally({"mark_step_calls": 2, "synchronize_calls": 1, "blocking_d2h_copies": 3})
    assert (t["launch"], t["wait"]) == (2, 4) and "3 blocking D2H" in t["parts"]
    assert set(t["missing"]) == {"event_record_flushes", "stream_synchronize_calls", "event_synchronize_calls"}


def test_one_median():
    assert report.median([3, 1, 2]) == 2 and report.median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        report.median([])


def test_child_results_come_through_the_file_not_stdout():
    """A child that writes a fake RESULT line and log noise on stdout: only what it emitted counts."""
    code = ("import sys; print('RESULT {\"fake\": 1}', 'noise', end=''); sys.stdout.flush(); "
            "from hpu_shim.testing.results import emit; emit({'real': 2}); print('trailing log line')")
    got = _proc.results([sys.executable, "-c", code], clean_env(PYTHONPATH=str(REPO)), timeout=300)
    assert got == [{"real": 2}]
    with pytest.raises(_proc.BenchError, match="without a result"):
        _proc.results([sys.executable, "-c", "print('RESULT {}')"], clean_env(PYTHONPATH=str(REPO)), timeout=300)


def test_plot_is_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    point = {"platform": "cpu", "tokens": 4096, "rates": {"memcpy_store": 10.0, "shim_store": 8.0}}
    message = report.plot_throughput(tmp_path / "t.png", [point], "shape")
    assert "matplotlib is not installed" in message and not (tmp_path / "t.png").exists()


def test_only_sections_replace_theirs_in_the_published_run(tmp_path):
    def row(i, v):
        return {"id": i, "figure": i, "value": v, "target": "t", "status": "PASS", "mode": "", "path": "",
                "machine": ""}

    published = {"machine": {"run": "full"}, "argv": [], "wall_s": 1, "raw": {"P1": 1, "P3": 3, "P6": "old"},
                 "rows": [row("P1", "a"), row("P3", "b"), row("P4", "c"), row("P6", "old")]}
    (tmp_path / "bench.json").write_text(json.dumps(published))
    new = {"machine": {"run": "full", "loadavg_end": [0.1]}, "argv": ["--only", "P3", "P6"],
           "raw": {"P3": 33, "P6": "new"}, "rows": [row("P3", "b2"), row("P4", "c2"), row("P6", "new")]}
    merged = readme.merge_sections(tmp_path / "bench.json", new, ["P3", "P6"])
    assert [(r["id"], r["value"]) for r in merged["rows"]] == [("P1", "a"), ("P3", "b2"), ("P4", "c2"), ("P6", "new")]
    assert merged["raw"] == {"P1": 1, "P3": 33, "P6": "new"} and set(merged["machine"]["updated"]) == {"P3", "P6"}
    with pytest.raises(FileNotFoundError, match="make bench"):
        readme.merge_sections(tmp_path / "missing.json", new, ["P6"])
