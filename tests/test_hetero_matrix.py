"""hpu_shim.testing.hetero_matrix: how a cell reads (the measured table is in docs/hetero.md; the
measurement itself is `python -m hpu_shim.testing.hetero_matrix`, ~8 LMCache interpreters)."""

from __future__ import annotations

from hpu_shim.testing import hetero_matrix as hm

KEY_037 = "vllm@hetero-model@1@0@2a931e3de8aacf26"
KEY_056 = "hetero-model@1@0@2a931e3de8aacf26@bfloat16"


def test_key_formats_are_told_apart():
    assert hm._split(KEY_037) == ("0.3.x", "2a931e3de8aacf26")
    assert hm._split(KEY_056) == (">=0.4", "2a931e3de8aacf26")
    assert hm._why([KEY_037], [KEY_056]) == "key format differs (same chunk hash)"
    assert hm._why([KEY_056], [KEY_056.replace("2a93", "ffff")]) == "chunk hash differs"
    assert hm._why([KEY_037.replace("2a93", "ffff")], [KEY_056]) == "key format and chunk hash differ"
    assert hm._why([KEY_056], [KEY_056]) == "same keys"


def test_cells():
    stored = {"chunk_keys": [KEY_037]}
    assert hm.cell(stored, {"retrieved": 1024, "equals_expected": True}) == "1024 bit-exact"
    assert hm.cell(stored, {"retrieved": 1024, "equals_expected": False}) == "1024 NOT bit-exact"
    assert hm.cell(stored, {"retrieved": 0, "chunk_keys": [KEY_056]}) == "miss: key format differs (same chunk hash)"
    assert hm.cell(stored, {"error": "boom"}).startswith("error: boom")


def test_render():
    results = {"_produce": {"a": {"chunk_keys": [KEY_037]}, "b": {"chunk_keys": [KEY_056]}},
               ("a", "a"): {"retrieved": 1024, "equals_expected": True},
               ("a", "b"): {"retrieved": 0, "chunk_keys": [KEY_056]},
               ("b", "a"): {"retrieved": 0, "chunk_keys": [KEY_037]},
               ("b", "b"): {"retrieved": 1024, "equals_expected": True}}
    table = hm.render(results, ["a", "b"]).splitlines()
    assert table[0].startswith("| producer \\ consumer | a ") and len(table) == 4
    assert "1024 bit-exact" in table[2] and "miss: key format differs" in table[2]
