"""``python -m hpu_shim bench``: the harness runs end to end at smoke sizes and reports every row,
and the whole-block transfer path it measures is exact.

The figures themselves are not asserted: they are timings on shared, noisy machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import REPO, clean_env, run_py
from hpu_shim.bench import report
from hpu_shim.transfer import kv_transfer

ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))
STATUSES = {"PASS", "FAIL", "INFO", "SKIP"}

#: (section, start of the figure) of every row the smoke run prints, in order.
SMOKE_ROWS = [
    *[("P1", f"syncs per batched {phase}, {size} tokens") for size in ("512", "1K") for phase in ("store", "retrieve")],
    *[("G", f"{kind}-graph signatures, slot mapping on the {where}")
      for where in ("device", "host") for kind in ("transfer", "index")],
    ("P2", "store (paged -> buffer), 512 tokens"), ("P2", "retrieve (buffer -> paged), 512 tokens"),
    ("P2", "store with per-chunk memory objects"), ("P2", "retrieve with per-chunk memory objects"),
    ("P3", "(a) torch.cuda attributes"), ("P3", "(b) Tensor.to"), ("P3", "(c) Tensor.cuda"),
    ("P4", "in-scope torch.cuda.current_device()"), ("P5", "import lmcache"), ("P6", "vLLM TTFT"),
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    (out / "ttft.json").write_text(json.dumps({"miss_s": 2.0, "hit_s": 0.5, "ratio": 4.0, "machine": "test"}))
    proc = subprocess.run([sys.executable, "-m", "hpu_shim", "bench", "--", "--smoke", "--out", str(out),
                           "--envs", str(ENVS)], env=clean_env(PYTHONPATH=str(REPO)), cwd=out,
                          capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.mark.lmcache
def test_smoke_run_prints_every_row(smoke):
    proc, out = smoke
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    doc = json.loads((out / "bench.json").read_text())
    rows = [(r["id"], r["figure"]) for r in doc["rows"]]
    assert len(rows) == len(SMOKE_ROWS)
    for (section, figure), (want_section, want_start) in zip(rows, SMOKE_ROWS):
        assert section == want_section and figure.startswith(want_start), (section, figure)
        assert f"| {section} " in proc.stdout and figure in proc.stdout
    assert {r["status"] for r in doc["rows"]} <= STATUSES
    assert all(r["value"] and r["target"] for r in doc["rows"])
    assert (out / "bench.md").read_text().strip() in proc.stdout
    assert {"cpu", "cores", "ram_gib", "torch"} <= set(doc["machine"])
    assert (out / "throughput.png").is_file() or "matplotlib is not installed" in proc.stdout


@pytest.mark.lmcache
def test_smoke_run_drives_the_releases_it_finds(smoke):
    proc, out = smoke
    rows = {(r["id"], r["figure"]): r for r in json.loads((out / "bench.json").read_text())["rows"]}
    by_section = lambda s: [r for (section, _), r in rows.items() if section == s]  # noqa: E731
    assert all(r["status"] != "SKIP" and "mark_step" in r["value"] for r in by_section("P1"))
    assert "x LMCache" in by_section("P2")[0]["value"]
    assert by_section("P5")[0]["status"] != "SKIP"
    assert by_section("P6")[0]["status"] == "INFO" and "4.00x" in by_section("P6")[0]["value"]


def test_plot_is_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    point = {"tokens": 4096, "rates": {"memcpy": 10.0, "shim_store": 8.0}}
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
