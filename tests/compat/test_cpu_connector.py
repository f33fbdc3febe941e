"""hpu_shim.compat.cpu_connector: the cpu backend's connector, for every CI release (issue 11, connector side).

With ``HPU_SHIM_BACKEND=cpu`` the connector LMCache builds must take vLLM-CPU's own layout *and* the
standard CUDA layouts (a cpu process standing in for a CUDA/ROCm prefill node: LMCache's 5-D
``[2, NB, BS, H, D]`` per layer, stacked ``[L, 2, NB, BS, H, D]``, per-layer ``(K, V)``, MLA), and store
the same ``KV_2LTD`` bytes a CUDA connector stores (the property suite compares every stored chunk
with an independent host gather in that format, and refuses the layerwise ``KV_T2D`` on retrieve).
"""

from __future__ import annotations

import pytest

from hpu_shim.testing.lmcache_properties import LAYOUTS, MALFORMED
from hpu_shim.testing.lmcache_roundtrip import SHARED, RunKey

pytestmark = pytest.mark.lmcache

VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
CUDA_ONLY = {"0.3.7", "0.4.2"}
#: case name -> (case, the layout the transfer path must have recognised)
CASES = {
    "vllm_cpu-bfloat16": ({"layout": "vllm_cpu"}, "vllm-cpu [NB, H, BS, 2*D]"),
    "vllm_cpu-float16-paged": ({"layout": "vllm_cpu", "dtype": "float16", "slots": "paged", "block_size": 16,
                                "num_blocks": 80}, "vllm-cpu [NB, H, BS, 2*D]"),
    "vllm_cpu-prefix-hit": ({"layout": "vllm_cpu", "prefix_hit": 512}, "vllm-cpu [NB, H, BS, 2*D]"),
    "5d": ({"layout": "5d", "block_size": 16, "num_blocks": 80, "slots": "paged"}, "lmcache 5-D [2, NB, BS, H, D]"),
    "stacked": ({"layout": "stacked", "block_size": 16, "num_blocks": 80}, "lmcache 5-D [2, NB, BS, H, D]"),
    "kv_tuple": ({"layout": "kv_tuple", "dtype": "float16"}, "vllm-gaudi (K, V) [NB, BS, H, D]"),
    "mla": ({"layout": "mla"}, "mla [NB, BS, D]"),
    "unfull-on": ({"layout": "5d", "save_unfull_chunk": True, "slots": "paged"}, "lmcache 5-D [2, NB, BS, H, D]"),
}
PROPERTY_EXAMPLES = 120
for _version in VERSIONS:
    _key = RunKey(_version, "eager", "cpu")
    for _name, (_case, _) in CASES.items():
        SHARED.register(_key, _name, _case)
    SHARED.register(_key, "properties", {"kind": "properties", "examples": PROPERTY_EXAMPLES, "engine_share": 0.05,
                                         "seed": 11})


def _expected_tokens(result: dict) -> int:
    case = result["case"]
    if case["prefix_hit"]:
        return case["prefix_hit"]
    return case["tokens"] if result["save_unfull_chunk"] else case["tokens"] // case["chunk_size"] * case["chunk_size"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("version", VERSIONS)
def test_cpu_backend_layouts_round_trip(version, name):
    result = SHARED.get(RunKey(version, "eager", "cpu"))[name]
    assert "error" not in result, result.get("traceback", result.get("error"))
    assert result["retrieved"] == _expected_tokens(result) > 0, result
    assert result["bit_exact"] is True and result["untouched_elsewhere"] is True, result
    assert result["layout_seen"] == CASES[name][1], result["layout_seen"]
    if version in CUDA_ONLY:
        assert result["substituted"].endswith("VLLMPagedMemGPUConnectorV2"), result
    else:
        assert result["substituted"] == "hpu_shim cpu connector", result
    # the cpu backend has no device to wait for and no graph to close
    for phase in ("store_counts", "retrieve_counts"):
        assert result[phase]["mark_step_calls"] == 0 and result[phase]["synchronize_calls"] == 0, result[phase]


@pytest.mark.parametrize("version", VERSIONS)
def test_cpu_backend_properties(version):
    result = SHARED.get(RunKey(version, "eager", "cpu"))["properties"]
    assert result.get("ok"), (f"{result.get('error')}\nsmallest failing example: {result.get('reproducer')}\n"
                              f"replay: {result.get('replay')}\n{result.get('traceback', '')}")
    counts = result["counts"]
    for layout in LAYOUTS["cpu"]:
        assert counts.get(f"layout:{layout}", 0) > 0, (layout, counts)
    assert counts.get("malformed:fmt_layerwise/retrieve", 0) > 0, counts  # KV_T2D refused with the clear error
    explicit = sum(len(calls) for calls, _, _ in MALFORMED.values())
    assert counts["valid"] + counts["malformed"] + counts["engine"] >= PROPERTY_EXAMPLES + explicit, counts
