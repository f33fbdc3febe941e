"""Seeded property tests of the shim's connectors through each CI release of LMCache (issue 8).

Per release, in the release's eager child and its lazy child (one interpreter each, shared with the
release tests): ``lmcache_properties`` draws connector cases (the connector LMCache builds, memory
objects from LMCache's allocator; layouts, dtypes, block sizes 16 - 256, chunk sizes, random /
vLLM-style / holed slot mappings on the device or the host, partial prefix hits, malformed inputs)
and a share of engine cases (partial prefix hits, ``save_unfull_chunk``). Valid cases are bit-exact
with nothing written elsewhere; malformed ones raise ``TransferInputError`` having written nothing.
A failure prints the smallest failing example and the command that replays it.
"""

from __future__ import annotations

import pytest

from hpu_shim.testing.lmcache_properties import LAYOUTS, MALFORMED
from hpu_shim.testing.lmcache_roundtrip import SHARED, RunKey

pytestmark = pytest.mark.lmcache

VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
#: Random examples per (release, mode), engine cases included; every malformed kind is added once on top.
EXAMPLES = {"eager": 330, "lazy": 200}
ENGINE_SHARE = 0.06
for _version in VERSIONS:
    for _mode, _n in EXAMPLES.items():
        SHARED.register(RunKey(_version, _mode), "properties",
                        {"kind": "properties", "examples": _n, "engine_share": ENGINE_SHARE, "seed": 20261202})


def _summary(version: str, mode: str) -> dict:
    result = SHARED.get(RunKey(version, mode))["properties"]
    if not result.get("ok"):
        raise AssertionError(f"LMCache {version} ({mode}): {result.get('error')}\n"
                             f"smallest failing example: {result.get('reproducer')}\n"
                             f"replay it alone: {result.get('replay')}\n{result.get('traceback', '')}")
    return result


@pytest.mark.parametrize("mode", EXAMPLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_connector_properties(version, mode):
    counts = _summary(version, mode)["counts"]
    explicit = sum(len(calls) for calls, _, _ in MALFORMED.values())
    assert counts["valid"] + counts["malformed"] + counts["engine"] >= EXAMPLES[mode] + explicit, counts
    assert counts["engine"] >= round(EXAMPLES[mode] * ENGINE_SHARE) and counts["valid"] >= EXAMPLES[mode] // 2, counts
    for layout in LAYOUTS["hpu"]:
        assert counts.get(f"layout:{layout}", 0) > 0, (layout, counts)
    for slots in ("random", "vllm", "holes"):
        for where in ("device", "host"):
            assert counts.get(f"slots:{slots}/{where}", 0) > 0, (slots, where, counts)
    assert counts.get("partial_prefix", 0) > 0, counts
    for name, (calls, _, _) in MALFORMED.items():
        for call in calls:
            assert counts.get(f"malformed:{name}/{call}", 0) > 0, (name, call, counts)


@pytest.mark.parametrize("version", VERSIONS)
def test_at_least_500_cases_per_release(version):
    total = sum(sum(_summary(version, mode)["counts"][k] for k in ("valid", "malformed", "engine"))
                for mode in EXAMPLES)
    assert total >= 500, total
