"""hpu_shim.compat.native_connector: LMCache >= 0.4.3's HPU connector, batched, byte-compatible.

Through real LMCache 0.4.3 and 0.5.6 on the emulated HPU: a chunk stored by LMCache's own
``VLLMPagedMemHPUConnectorV2`` is retrieved bit-exact by the shim's batched subclass and the other
way round, and both store identical bytes; ``HPU_SHIM_NATIVE_CONNECTOR=1`` keeps LMCache's own
connector (chunk by chunk), which the sync counts show next to the shim's one call.
"""

from __future__ import annotations

import pytest

from hpu_shim.testing.lmcache_roundtrip import SHARED, RunKey

NATIVE = ("0.4.3", "0.5.6")
CROSS_LAYOUTS = ("kv_tuple", "flat", "mla", "5d")
DIRECTIONS = (("lmcache", "shim"), ("shim", "lmcache"))
for _version in NATIVE:
    for _layout in CROSS_LAYOUTS:
        for _store, _retrieve in DIRECTIONS:
            SHARED.register(RunKey(_version, "lazy"), f"cross-{_layout}-{_store}-to-{_retrieve}",
                            {"kind": "cross", "layout": _layout, "store_with": _store, "retrieve_with": _retrieve,
                             "num_layers": 4, "tokens": 1000, "slots": "paged" if _layout == "kv_tuple" else "random"})
OWN_CASES = {"kv_tuple": {"layout": "kv_tuple"}, "flat": {"layout": "flat"},
             "16-chunks": {"layout": "kv_tuple", "num_layers": 32, "tokens": 4096, "num_blocks": 40}}
for _name, _case in OWN_CASES.items():
    SHARED.register(RunKey("0.5.6", "lazy", native=True), _name, _case)


@pytest.mark.lmcache
@pytest.mark.parametrize("store_with, retrieve_with", DIRECTIONS)
@pytest.mark.parametrize("layout", CROSS_LAYOUTS)
@pytest.mark.parametrize("version", NATIVE)
def test_stored_by_one_retrieved_by_the_other(version, layout, store_with, retrieve_with):
    result = SHARED.get(RunKey(version, "lazy"))[f"cross-{layout}-{store_with}-to-{retrieve_with}"]
    assert "error" not in result, result.get("traceback", result.get("error"))
    assert "hpu_shim batched" in result["classes"]["shim"] and "layout fixes" in result["classes"]["lmcache"], result
    assert result["chunks"] >= 3 and result["same_bytes"] is True, result  # identical memory objects
    assert result["retrieved"] == result["hit"] > 0, result
    assert result["bit_exact"] is True and result["untouched_elsewhere"] is True, result


@pytest.mark.lmcache
@pytest.mark.parametrize("version", NATIVE)
def test_one_batched_call_against_lmcaches_chunk_by_chunk(version):
    """The same 3-chunk store/retrieve: LMCache's own connector pays per chunk, the shim's once per call."""
    results = SHARED.get(RunKey(version, "lazy"))
    own = results["cross-kv_tuple-lmcache-to-shim"]["store_counts"]
    shim = results["cross-kv_tuple-shim-to-lmcache"]["store_counts"]
    chunks = results["cross-kv_tuple-lmcache-to-shim"]["chunks"]
    assert own["mark_step_calls"] == 2 * chunks and own["synchronize_calls"] == chunks, own
    assert shim["mark_step_calls"] <= 2 and shim["synchronize_calls"] + shim["blocking_d2h_copies"] == 1, shim
    own_retrieve = results["cross-kv_tuple-shim-to-lmcache"]["retrieve_counts"]
    assert own_retrieve["mark_step_calls"] == (4 + 1) * chunks, own_retrieve  # L + 1 per chunk, L = 4


@pytest.mark.lmcache
def test_native_connector_env_keeps_lmcaches_own():
    """HPU_SHIM_NATIVE_CONNECTOR=1: LMCache's class with the layout fixes only; status() says so."""
    results = SHARED.get(RunKey("0.5.6", "lazy", native=True))
    for name, result in results.items():
        assert "error" not in result, result.get("traceback", result.get("error"))
        assert result["bit_exact"] is True and result["untouched_elsewhere"] is True, (name, result)
        assert result["substituted"] == "VLLMPagedMemHPUConnectorV2 + layout fixes", result
        assert result["profile"] == "0.5.6 (native HPU release: LMCache's own HPU connector)", result["profile"]
    big = results["16-chunks"]
    chunks = big["case"]["tokens"] // big["case"]["chunk_size"]
    assert big["store_counts"]["mark_step_calls"] == 2 * chunks
    assert big["retrieve_counts"]["mark_step_calls"] == (big["case"]["num_layers"] + 1) * chunks
    assert big["store_counts"]["synchronize_calls"] == big["retrieve_counts"]["synchronize_calls"] == chunks


#: (version, backend, HPU_SHIM_NATIVE_CONNECTOR) -> the words describe_connector() must use.
DESCRIPTIONS = {
    ("0.3.7", "hpu", False): "shim batched connector (replaces the CUDA-only VLLMPagedMemGPUConnectorV2)",
    ("0.5.6", "hpu", False): "shim batched connector (batched subclass of LMCache's VLLMPagedMemHPUConnectorV2",
    ("0.5.6", "hpu", True): "LMCache's own HPU connector (VLLMPagedMemHPUConnectorV2, chunk by chunk",
    ("0.4.3", "auto", True): "LMCache's own HPU connector",
    ("0.5.6", "cpu", False): "shim cpu connector",
    ("0.3.7", "cpu", True): "shim cpu connector",
}


@pytest.mark.parametrize("version, backend, native", DESCRIPTIONS)
def test_describe_connector(version, backend, native):
    from hpu_shim.compat.native_connector import describe_connector

    line = describe_connector(version, backend, native)
    assert line.startswith(f"LMCache {version}: ") and DESCRIPTIONS[version, backend, native] in line, line
    assert "\n" not in line


def test_describe_connector_reads_the_environment(monkeypatch):
    from hpu_shim.compat.native_connector import describe_connector

    monkeypatch.setenv("HPU_SHIM_BACKEND", "hpu")
    monkeypatch.setenv("HPU_SHIM_NATIVE_CONNECTOR", "1")
    assert "LMCache's own HPU connector" in describe_connector("0.5.6")
    monkeypatch.setenv("HPU_SHIM_NATIVE_CONNECTOR", "0")
    assert "shim batched connector" in describe_connector("0.5.6")
    assert describe_connector("not-a-version").endswith("unrecognised version, no connector substitution")


def test_doctor_names_the_connector_that_runs():
    """``doctor`` says which connector moves KV for the installed release, and follows the switch."""
    import subprocess
    import sys

    from _helpers import REPO, clean_env

    from hpu_shim.testing.lmcache_roundtrip import release_dir

    for native, words in (("0", "shim batched connector"), ("1", "LMCache's own HPU connector")):
        env = clean_env(PYTHONPATH=f"{release_dir('0.5.6')}:{REPO}", HPU_SHIM_FAKE_HPU="1",
                        HPU_SHIM_NATIVE_CONNECTOR=native, PYTHONHASHSEED="0")
        proc = subprocess.run([sys.executable, "-m", "hpu_shim", "doctor", "--no-keys"], env=env,
                              capture_output=True, text=True, timeout=300)
        line = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith("connector ")), None)
        assert line is not None and "LMCache 0.5.6: " + words in line, proc.stdout + proc.stderr
