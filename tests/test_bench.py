"""``python -m hpu_shim bench``: the harness runs end to end at smoke sizes and reports every row with
its mode and path, a missing prerequisite is a FAIL row (never a skip), the benchmark page is the
rendering of its JSON, and the kernel behind the extra P2 row (``kv_transfer``'s whole-block path) is exact.

The figures themselves are not asserted: they are timings on shared, noisy machines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import REPO, clean_env, run_py
from hpu_shim.bench import _proc, config, p1_syncs, p2_throughput, readme, report
from hpu_shim.transfer import kv_transfer

ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))
SMOKE = config.SMOKE

#: (section, start of the figure) of every row the smoke run prints, in order.
SMOKE_ROWS = [
    *[("P1", f"syncs per batched {phase}, {report.size(t)} tokens") for _ in SMOKE.p1_releases
      for t in SMOKE.p1_tokens for phase in ("store", "retrieve")],
    *[("G", f"{kind}-graph signatures ({mode}), slot mapping on the {where}")
      for mode in ("lazy", "eager") for where in ("device", "host") for kind in ("transfer", "index")],
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
    assert [r["path"].split(" engine.")[0] for r in p1] == [f"LMCache {v}" for v in SMOKE.p1_releases
                                                          for _ in SMOKE.p1_tokens for _ in ("store", "retrieve")]
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
    assert table.strip() == readme.readme_table(doc) and table.count("\n") == len(doc["rows"]) + 2
    for row in doc["rows"]:
        assert row["figure"] in table and row["mode"] in table


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


# -- the whole-block path of kv_transfer, which P2 measures -------------------------------------------

NB, BS, LAYERS = 24, 128, 3


def _kv(layout: str, dtype, device: str) -> list:
    g = torch.Generator().manual_seed(1)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype).to(device)

    if layout == "5d":
        return [rnd(2, NB, BS, 1, 6) for _ in range(LAYERS)]
    if layout == "kv_tuple":
        return [(rnd(NB, BS, 2, 16), rnd(NB, BS, 2, 16)) for _ in range(LAYERS)]
    if layout == "mla-odd-offset":  # rows cannot be viewed as int64 words: the same-dtype fallback
        return [rnd(NB * BS * 24 + 1)[1:].view(NB * BS, 24) for _ in range(LAYERS)]
    return [rnd(NB, BS, 24) for _ in range(LAYERS)]  # mla


def _slots(kind: str) -> tuple[torch.Tensor, list[int], list[int]]:
    order = torch.randperm(NB, generator=torch.Generator().manual_seed(2))
    runs = (order[:, None] * BS + torch.arange(BS)).flatten()
    if kind == "blocks":  # vLLM: whole blocks, two chunks
        return runs, [0, 256], [256, 1024]
    if kind == "blocks+tail":  # a partial last block
        return runs, [0, 512], [512, 1000]
    if kind == "unaligned":  # starts inside a block: per token
        return runs[100:], [0], [700]
    return torch.randperm(NB * BS, generator=torch.Generator().manual_seed(3)), [0, 300], [300, 650]


#: (layout, dtype, slots, rows per index entry the plan must pick)
CASES = [(layout, dtype, kind, rows)
         for layout, dtype in (("5d", "bfloat16"), ("kv_tuple", "float16"), ("mla", "float32"),
                               ("mla-odd-offset", "bfloat16"))
         for kind, rows in (("blocks", 128), ("blocks+tail", 128), ("unaligned", 1), ("random", 1))]


def check_case(device: str, layout: str, dtype_name: str, kind: str, rows: int) -> None:
    """gather and scatter through the plan: exact, the slots only, nothing past n."""
    dtype = getattr(torch, dtype_name)
    kv = _kv(layout, dtype, device)
    _, layers = kv_transfer.normalize(kv, use_mla=layout.startswith("mla"))
    slots, starts, ends = _slots(kind)
    index = torch.cat([slots[s:e] for s, e in zip(starts, ends)])
    assert kv_transfer._plan(slots, starts, ends, layers).rows == rows
    before = [[v.cpu().clone() for v in views] for views in layers]
    want = torch.stack([torch.stack([v[index] for v in views]) for views in before], dim=1)

    got = kv_transfer.gather(layers, slots, starts, ends, lambda: None)
    assert got.device.type == "cpu" and torch.equal(got, want)
    out = torch.full((want.shape[0], LAYERS, index.numel() + 3, want.shape[-1]), 7, dtype=dtype)
    assert torch.equal(kv_transfer.gather(layers, slots, starts, ends, lambda: None, out=out), want)
    assert bool((out[:, :, index.numel():] == 7).all())  # nothing written past n
    with pytest.raises(ValueError, match="out"):
        kv_transfer.gather(layers, slots, starts, ends, lambda: None, out=out[:, :, :10])
    objs = [torch.zeros(want.shape[0], LAYERS, 800, want.shape[-1], dtype=dtype) for _ in starts]  # per chunk
    for view, obj, s, e in zip(kv_transfer.gather(layers, slots, starts, ends, lambda: None, out=objs), objs,
                               starts, ends):
        assert torch.equal(view, want[:, :, s - starts[0]: e - starts[0]]) and not obj[:, :, e - s:].any()

    for source in ("one", "per chunk"):
        new = torch.randn(want.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
        host = new if source == "one" else [new[:, :, s - starts[0]: e - starts[0]].clone()
                                            for s, e in zip(starts, ends)]
        kv_transfer.scatter(layers, host, slots, starts, ends, lambda: None, lambda: None)
        for li, views in enumerate(layers):
            for ki, view in enumerate(views):
                expected = before[li][ki].clone()
                expected[index] = new[ki, li]
                assert torch.equal(view.cpu(), expected), (source, li, ki)  # the slots, and nothing else


@pytest.mark.parametrize("layout, dtype, kind, rows", CASES)
def test_block_path_is_exact_on_cpu(layout, dtype, kind, rows):
    check_case("cpu", layout, dtype, kind, rows)


def run_on_the_emulator() -> None:
    """Every case on the emulated HPU, and a device slot mapping is never read on the host."""
    from hpu_shim import testing

    for case in CASES:
        check_case("hpu", *case)
    _, layers = kv_transfer.normalize(_kv("kv_tuple", torch.bfloat16, "hpu"))
    slots, starts, ends = _slots("blocks")
    device_slots = slots.to("hpu")
    with testing.count() as c:
        plan = kv_transfer._plan(device_slots, starts, ends, layers)
    assert plan.rows == 1 and c.d2h_copies == 0


def test_block_path_is_exact_on_the_emulated_hpu():
    # A fresh interpreter: the emulator cannot be uninstalled, and later test modules expect a plain torch.
    run_py("""
        from hpu_shim import testing
        testing.install_emulator()
        import test_bench
        test_bench.run_on_the_emulator()
    """, path=[REPO / "tests"], env={"PT_HPU_LAZY_MODE": "1"}, timeout=300)
