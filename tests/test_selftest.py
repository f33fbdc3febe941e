"""``python -m hpu_shim selftest`` (hpu_shim/cli/selftest.py) on the emulated HPU, eager and lazy, plus a
negative control: the round trip runs through real LMCache 0.5.6's engine and the HPU connector it
builds, in vllm-gaudi's per-layer TensorTuple layout, and must be bit-exact with nothing written elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpu_shim.cli import selftest

REPO = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("HPU_SHIM_ENVS") or REPO / ".envs")
SMALL = ["--tokens", "512", "--layers", "2", "--heads", "2", "--head-dim", "64", "--chunk-size", "256"]


def _lmcache(version: str = "0.5.6") -> str:
    path = ENVS / f"lmcache-{version}"
    if not (path / "lmcache" / "__init__.py").is_file():
        # A missing prerequisite is a failure, never a skip.
        pytest.fail(f"LMCache {version} is not installed in {path}: run `make lmcache-envs` (or `make test`)")
    return str(path)


@pytest.fixture
def gaudi_env(monkeypatch):
    """The parent runs here; the child it starts inherits this environment."""
    for name in ("HPU_SHIM_FAKE_HPU", "PT_HPU_LAZY_MODE", "HPU_SHIM_FAKE_HPU_PROFILE", "PT_HPU_PLACE_ON_CPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([_lmcache(), str(REPO)]))
    return monkeypatch


def _run(tmp_path, capsys, *args) -> tuple[int, dict, str]:
    out = tmp_path / "selftest.json"
    rc = selftest.main([*args, "--json", str(out)])
    text = capsys.readouterr().out
    return rc, json.loads(out.read_text()), text


@pytest.mark.parametrize("mode", ["lazy", "eager"])
def test_round_trip_is_bit_exact_and_the_negative_control_fails(gaudi_env, tmp_path, capsys, mode):
    extra = ["--negative-control"] if mode == "lazy" else []  # one child per mode (CI budget)
    rc, r, text = _run(tmp_path, capsys, "--emulate", "--mode", mode, *extra, *SMALL)
    assert rc == 0, text
    assert r["bit_exact"] and r["untouched_elsewhere"] and r["retrieved"] == r["stored"] == 512
    assert r["mode"].startswith(mode) and r["lmcache"] == "0.5.6" and "emulated" in r["bridge"]
    assert r["connector"].endswith("VLLMPagedMemHPUConnectorV2")  # the connector LMCache built
    assert "TensorTuple((K, V)), each [8, 128, 2, 64] bfloat16" in r["layout"]
    for phase in ("store", "retrieve"):
        assert r[phase]["gb_per_s"] > 0 and r[phase]["bytes"] == 512 * 2 * 2 * 2 * 64 * 2
        # lazy: the shim's connector flushes the graph; eager (the bridge's default): nothing to flush
        assert (r[phase]["mark_step"] >= 1) == (mode == "lazy") and r[phase]["synchronize"] >= 0
    counts = r["emulator_counts"]
    assert counts["retrieve_h2d_bytes"] > 0 and counts["store_d2h_bytes"] > 0
    assert (counts["store_graph_flushes"] > 0) == (mode == "lazy")
    assert "PASS: bit-exact" in text and "GB/s" in text and "lmcache    0.5.6" in text
    if extra:
        control = r["negative_control"]
        assert control["corrupted_objects"] > 0 and control["bit_exact"] is False
        assert "FAIL: restored KV differs" in control["verdict"] and "control    corrupted" in text


def test_real_gaudi_path_without_a_device_is_unusable_not_a_pass(gaudi_env, tmp_path, capsys):
    """No --emulate and no Gaudi here: exit 2 with what to do, and hpu_shim.testing never imported."""
    rc, r, text = _run(tmp_path, capsys, *SMALL)
    assert rc == selftest.EXIT_UNUSABLE, text
    assert r["imported_hpu_shim_testing"] is False
    assert "--emulate" in r["error"]


def test_bad_sizes_are_usage_errors(capsys):
    assert selftest.main(["--tokens", "0"]) == selftest.EXIT_UNUSABLE
    assert "--tokens must be positive" in capsys.readouterr().err


def test_registered_as_a_subcommand(capsys):
    from hpu_shim.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["selftest", "--help"])
    assert exit_info.value.code == 0 and "--emulate" in capsys.readouterr().out
