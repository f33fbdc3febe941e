"""Real, unmodified LMCache releases store and retrieve KV on the emulated HPU through the shim.

Each release runs in fresh interpreters configured like a Gaudi container: the release on
``PYTHONPATH`` (installed by ``.ci/lmcache-envs.sh``), ``HPU_SHIM_FAKE_HPU=1`` for the emulator,
lazy mode, and ``HPU_SHIM=1`` -- or not, to record how each release fails without the shim.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from _helpers import REPO, clean_env
from hpu_shim.testing.results import run_child

pytestmark = pytest.mark.lmcache

ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))
VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
CUDA_ONLY = {"0.3.7", "0.4.2"}  # no HPU connector: the shim substitutes its own
LAYOUTS = ("kv_tuple", "flat", "5d", "mla")
DTYPES = ("bfloat16", "float16")
TOKENS, CHUNK = 1000, 256

CASES = {f"{layout}-{dtype}": {"layout": layout, "dtype": dtype} for layout in LAYOUTS for dtype in DTYPES}
CASES.update({
    "prefix-hit": {"layout": "kv_tuple", "prefix_hit": 512},
    "unfull-on-paged-slots": {"layout": "kv_tuple", "save_unfull_chunk": True, "slots": "paged"},
    "unfull-off": {"layout": "flat", "save_unfull_chunk": False},
    "32-layers-16-chunks": {"layout": "kv_tuple", "num_layers": 32, "tokens": 4096, "num_blocks": 40},
    "negative-control": {"layout": "kv_tuple", "corrupt": True},
    "layerwise": {"layout": "kv_tuple", "use_layerwise": True},
})


def release_path(version: str) -> Path:
    path = ENVS / f"lmcache-{version}"
    if not (path / "lmcache" / "__init__.py").is_file():
        # A missing prerequisite is a failure, never a skip: CI must not pass by testing nothing.
        pytest.fail(f"LMCache {version} is not installed in {path}: run `make lmcache-envs` (or `make test`)")
    return path


def run_roundtrip(version: str, cases: list[dict], *, shim: bool, report: Path | None = None) -> list[dict]:
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(REPO / "sitecustomize"), str(release_path(version)), str(REPO)]),
        HPU_SHIM_FAKE_HPU="1", HPU_SHIM="1" if shim else "0", HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE="1",
        LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0",
    )
    if report is not None:
        env["HPU_SHIM_REPORT"] = str(report)
    child = run_child([sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps(cases)],
                      env=env, timeout=1200)
    assert len(child.results) == len(cases), child.diagnostics()
    return child.results


@pytest.fixture(scope="module")
def shimmed(tmp_path_factory):
    """All cases per release, one interpreter per release (LMCache imports are slow)."""
    cache: dict[str, dict[str, dict]] = {}

    def get(version: str) -> dict[str, dict]:
        if version not in cache:
            report = tmp_path_factory.mktemp(f"audit-{version}") / "audit.jsonl"
            results = run_roundtrip(version, list(CASES.values()), shim=True, report=report)
            cache[version] = dict(zip(CASES, results))
            cache[version]["_audit"] = {"rows": [json.loads(x) for x in report.read_text().splitlines()]}
        return cache[version]

    return get


def expected_tokens(result: dict) -> int:
    case = result["case"]
    if case["prefix_hit"]:
        return case["prefix_hit"]
    unfull = result["save_unfull_chunk"]
    return case["tokens"] if unfull else case["tokens"] // case["chunk_size"] * case["chunk_size"]


def assert_roundtrip(result: dict) -> None:
    assert "error" not in result, result.get("traceback", result.get("error"))
    assert result["retrieved"] == expected_tokens(result) > 0, result
    assert result["bit_exact"] is True, result
    assert result["untouched_elsewhere"] is True, result


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("negative-control", "layerwise")])
@pytest.mark.parametrize("version", VERSIONS)
def test_store_lookup_retrieve_bit_exact(shimmed, version, name):
    result = shimmed(version)[name]
    assert_roundtrip(result)
    if version in CUDA_ONLY:
        assert result["substituted"].endswith("VLLMPagedMemGPUConnectorV2"), result["connector"]
    else:
        assert result["connector"].endswith("hpu_connector.VLLMPagedMemHPUConnectorV2")


@pytest.mark.parametrize("version", VERSIONS)
def test_negative_control_corrupted_store_is_caught(shimmed, version):
    result = shimmed(version)["negative-control"]
    assert result["retrieved"] > 0 and result["bit_exact"] is False


@pytest.mark.parametrize("version", VERSIONS)
def test_layerwise_fails_clearly(shimmed, version):
    error = shimmed(version)["layerwise"]["error"]
    assert "use_layerwise" in error and "HPU" in error, error


@pytest.mark.parametrize("version", sorted(CUDA_ONLY))
def test_shim_path_device_sync_budget(shimmed, version):
    """<= 2 mark_step and <= 1 synchronize per batched store or retrieve, whatever the layers and chunks."""
    for name, result in shimmed(version).items():
        if name.startswith("_") or "error" in result:
            continue
        for phase in ("store_counts", "retrieve_counts"):
            counts = result[phase]
            assert counts["mark_step_calls"] <= 2 and counts["synchronize_calls"] <= 1, (name, phase, counts)
    big = shimmed(version)["32-layers-16-chunks"]
    assert big["store_counts"]["mark_step_calls"] == 1 and big["retrieve_counts"]["synchronize_calls"] == 1


@pytest.mark.parametrize("version", sorted(set(VERSIONS) - CUDA_ONLY))
def test_native_connector_sync_pattern_for_comparison(shimmed, version):
    """LMCache's own HPU connector: 2 mark_step (store) or L+1 (retrieve) and 1 synchronize *per chunk*."""
    big = shimmed(version)["32-layers-16-chunks"]
    chunks = big["case"]["tokens"] // big["case"]["chunk_size"]
    layers = big["case"]["num_layers"]
    assert big["store_counts"]["mark_step_calls"] == 2 * chunks
    assert big["retrieve_counts"]["mark_step_calls"] == (layers + 1) * chunks
    assert big["store_counts"]["synchronize_calls"] == big["retrieve_counts"]["synchronize_calls"] == chunks


@pytest.mark.parametrize("version", sorted(CUDA_ONLY))
def test_c_ops_imports_resolve_to_the_stand_in(shimmed, version):
    rows = shimmed(version)["_audit"]["rows"]
    stand_in = [r for r in rows if r["api"] == "import lmcache.c_ops"]
    assert stand_in and all("torch-native stand-in" in r["target"] for r in stand_in)
    assert any(r["api"] == "torch.cuda.Stream" and r["target"] == "torch.hpu.Stream()" for r in rows)


#: What each release does on the emulated HPU *without* the shim (the shim is what makes it work).
WITHOUT_SHIM = {
    "0.3.7": "torch.cuda.Stream requires CUDA support",  # VLLMPagedMemGPUConnectorV2.__init__
    "0.4.2": "Unsupported device platform for LMCache engine",  # get_vllm_torch_dev: cuda or xpu only
    "0.4.3": "'TensorTuple' object has no attribute 'is_contiguous'",  # HPU connector vs vllm-gaudi's TensorTuple
}


@pytest.mark.parametrize("version", VERSIONS)
def test_without_the_shim(version):
    results = run_roundtrip(version, [{"layout": "kv_tuple"}, {"layout": "flat"}], shim=False)
    if version in WITHOUT_SHIM:
        assert WITHOUT_SHIM[version] in results[0].get("error", ""), results[0]
    else:
        # 0.5.6's own HPU connector, unmodified, on the emulator: the emulator's fidelity check.
        assert_roundtrip(results[0])
        assert results[0]["substituted"] is None
    assert "error" in results[1]  # the flat layout of vllm-gaudi < 0.11.2 breaks every release without the shim
