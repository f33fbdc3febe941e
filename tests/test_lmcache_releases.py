"""Real, unmodified LMCache releases store and retrieve KV on the emulated HPU through the shim.

Each release runs in fresh interpreters configured like a Gaudi container: the release on
``PYTHONPATH`` (installed by ``.ci/lmcache-envs.sh``), ``HPU_SHIM_FAKE_HPU=1`` for the emulator, in
**eager** mode (``PT_HPU_LAZY_MODE=0``, Gaudi's default) and in **lazy** mode (``=1``), and
``HPU_SHIM=1`` -- or not, to record how each release fails without the shim. Cases are registered
with ``lmcache_roundtrip.SHARED`` so the test modules share one child per (release, mode).
"""

from __future__ import annotations

import pytest

from hpu_shim.testing.lmcache_roundtrip import SHARED, RunKey, release_dir

pytestmark = pytest.mark.lmcache

VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
CUDA_ONLY = {"0.3.7", "0.4.2"}  # no HPU connector: the shim substitutes its own
MODES = ("lazy", "eager")
LAYOUTS = ("kv_tuple", "flat", "5d", "mla")
DTYPES = ("bfloat16", "float16")

CASES = {f"{layout}-{dtype}": {"layout": layout, "dtype": dtype} for layout in LAYOUTS for dtype in DTYPES}
CASES.update({
    "prefix-hit": {"layout": "kv_tuple", "prefix_hit": 512},
    "unfull-on-paged-slots": {"layout": "kv_tuple", "save_unfull_chunk": True, "slots": "paged"},
    "unfull-off": {"layout": "flat", "save_unfull_chunk": False},
    "32-layers-16-chunks": {"layout": "kv_tuple", "num_layers": 32, "tokens": 4096, "num_blocks": 40, "slots": "paged"},
    # P1 at a longer prompt (CI+BENCH measures 128K): 32K tokens, 128 chunks, vLLM-style slots
    "32k-tokens": {"layout": "kv_tuple", "num_layers": 4, "heads": 1, "head_dim": 16, "tokens": 32768,
                   "num_blocks": 260, "slots": "paged"},
    "negative-control": {"layout": "kv_tuple", "corrupt": True},
    "layerwise": {"layout": "kv_tuple", "use_layerwise": True},
})
ROUNDTRIPS = [n for n in CASES if n not in ("negative-control", "layerwise")]
for _version in VERSIONS:
    for _mode in MODES:
        for _name, _case in CASES.items():
            SHARED.register(RunKey(_version, _mode), _name, _case)
    for _name, _case in {"kv_tuple": {"layout": "kv_tuple"}, "flat": {"layout": "flat"}}.items():
        SHARED.register(RunKey(_version, "lazy", shim=False), _name, _case)


def release_path(version: str):
    """The release's ``.envs`` directory; a missing release is a failure, never a skip (other test modules use it)."""
    try:
        return release_dir(version)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module", autouse=True)
def releases_installed():
    """CI must not pass by testing nothing."""
    for version in VERSIONS:
        release_path(version)


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


def device_waits(counts: dict) -> int:
    """Everything that makes the host wait for the device: synchronizes of any kind, blocking D2H copies."""
    return sum(counts.get(k, 0) for k in ("synchronize_calls", "stream_synchronize_calls",
                                          "event_synchronize_calls", "blocking_d2h_copies"))


def budget(result: dict, call: dict) -> tuple[int, int]:
    """(mark_step, device waits) one batched call may take in lazy mode.

    P1: 2 + 1 for vLLM's slot mappings (whole blocks). A mapping that is not whole blocks (the
    ``random`` cases) is found out by the device-side check in the call's one sync and the call is
    redone token by token: twice that, still bit-exact. Memory objects LMCache hands over on the
    device (0.5.x broadcasts them for MLA) come back to the host in one more blocking copy.
    """
    redo = 1 if result["case"]["slots"] == "paged" else 2
    return 2 * redo, redo + (1 if call["device_objs"] else 0)


@pytest.mark.parametrize("name", ROUNDTRIPS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_store_lookup_retrieve_bit_exact(version, mode, name):
    result = SHARED.get(RunKey(version, mode))[name]
    assert_roundtrip(result)
    assert result["mode"] == mode
    if version in CUDA_ONLY:
        assert result["substituted"].endswith("VLLMPagedMemGPUConnectorV2"), result["connector"]
    else:
        assert result["connector"].endswith("hpu_connector.VLLMPagedMemHPUConnectorV2")
        assert result["substituted"] == "VLLMPagedMemHPUConnectorV2 (hpu_shim batched)", result
        assert result["profile"] == f"{version} (native HPU release: shim batched connector)", result["profile"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_negative_control_corrupted_store_is_caught(version, mode):
    result = SHARED.get(RunKey(version, mode))["negative-control"]
    assert result["retrieved"] > 0 and result["bit_exact"] is False


@pytest.mark.parametrize("version", VERSIONS)
def test_layerwise_fails_clearly(version):
    error = SHARED.get(RunKey(version, "lazy"))["layerwise"]["error"]
    assert "use_layerwise" in error and "HPU" in error, error


@pytest.mark.parametrize("version", VERSIONS)
def test_lazy_mode_device_sync_budget(version):
    """P1: <= 2 mark_step and <= 1 device wait per batched store or retrieve, whatever the layers and chunks."""
    results = SHARED.get(RunKey(version, "lazy"))
    for name in ROUNDTRIPS:
        calls = results[name]["connector_calls"]
        assert {c["call"] for c in calls} == {"batched_from_gpu", "batched_to_gpu"}, (name, calls)
        for call in calls:
            marks, waits = budget(results[name], call)
            assert call["mark_step_calls"] <= marks and device_waits(call) <= waits, (name, call)
    for name in ("32-layers-16-chunks", "32k-tokens", "unfull-on-paged-slots"):
        calls = results[name]["connector_calls"]
        assert len(calls) == 2 and calls[0]["chunks"] >= 4, calls  # one batched store, one batched retrieve
        store, retrieve = calls
        assert store["mark_step_calls"] <= 2 and store["blocking_d2h_copies"] == 1 == device_waits(store), store
        assert retrieve["mark_step_calls"] <= 2 and retrieve["synchronize_calls"] == 1 == device_waits(retrieve)


@pytest.mark.parametrize("version", VERSIONS)
def test_eager_mode_has_no_mark_step(version):
    """Eager mode (Gaudi's default): mark_step does nothing there, so the transfer path never calls it."""
    results = SHARED.get(RunKey(version, "eager"))
    for name in ROUNDTRIPS:
        for call in results[name]["connector_calls"]:
            _, waits = budget(results[name], call)
            assert call["mark_step_calls"] == 0 and device_waits(call) <= waits, (name, call)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_transfer_path_stays_on_the_device(version, mode):
    """No CPU fallback, no float64 on the HPU, no int64 cast on the host, host bytes <= 1.25x the payload."""
    results = SHARED.get(RunKey(version, mode))
    for name in ROUNDTRIPS:
        for call in results[name]["connector_calls"]:
            assert call["cpu_fallbacks"] == 0 and call["float64_downcasts"] == 0, (name, call)
            assert call["int64_host_casts"] == 0, (name, call)
    for name in ("32-layers-16-chunks", "32k-tokens"):
        case = results[name]["case"]
        for call in results[name]["connector_calls"]:
            payload = 2 * case["num_layers"] * call["tokens"] * case["heads"] * case["head_dim"] * 2  # bf16
            moved = call["d2h_bytes"] if call["call"] == "batched_from_gpu" else call["h2d_bytes"]
            assert moved <= 1.25 * payload, (name, call, payload)
            assert call["bounce_buffer_bytes"] + call["host_memcpy_bytes"] <= 1.25 * payload, (name, call, payload)


@pytest.mark.parametrize("version", sorted(CUDA_ONLY))
def test_c_ops_imports_resolve_to_the_stand_in(version):
    result = SHARED.get(RunKey(version, "lazy"))["kv_tuple-bfloat16"]
    assert result["profile"] == f"{version} (CUDA-only: shim connector)"
    stand_in = [r for r in result["redirects"] if r.startswith("import lmcache.c_ops ->")]
    assert stand_in and all("torch-native stand-in" in r for r in stand_in), result["redirects"]
    assert "torch.cuda.Stream -> torch.hpu.Stream()" in result["redirects"], result["redirects"]


#: What each release does on the emulated HPU *without* the shim (the shim is what makes it work).
WITHOUT_SHIM = {
    "0.3.7": "torch.cuda.Stream requires CUDA support",  # VLLMPagedMemGPUConnectorV2.__init__
    "0.4.2": "Unsupported device platform for LMCache engine",  # get_vllm_torch_dev: cuda or xpu only
    "0.4.3": "'TensorTuple' object has no attribute 'is_contiguous'",  # HPU connector vs vllm-gaudi's TensorTuple
}


@pytest.mark.parametrize("version", VERSIONS)
def test_without_the_shim(version):
    results = SHARED.get(RunKey(version, "lazy", shim=False))
    if version in WITHOUT_SHIM:
        assert WITHOUT_SHIM[version] in results["kv_tuple"].get("error", ""), results["kv_tuple"]
    else:
        # 0.5.6's own HPU connector, unmodified, on the emulator: the emulator's fidelity check.
        assert_roundtrip(results["kv_tuple"])
        assert results["kv_tuple"]["substituted"] is None
    assert "error" in results["flat"]  # the flat layout of vllm-gaudi < 0.11.2 breaks every release without the shim
