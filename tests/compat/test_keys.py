"""hpu_shim.compat.keys: LMCache 0.3.x chunk keys are the same in every process and on every Python.

LMCache <= 0.3.x hashes ``(prefix_hash, tokens, None)`` with the builtin ``hash``; on CPython < 3.12
``hash(None)`` comes from an address, so two processes disagree. The fix hashes as CPython >= 3.12 does.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hpu_shim.compat import keys
from hpu_shim.testing.results import run_child

REPO = Path(__file__).resolve().parents[2]
ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))


def _values(seed: int, n: int = 300) -> list:
    """Seeded random values of the kinds LMCache hashes: ints (also huge/negative), strings, tuples, None."""
    rng = random.Random(seed)

    def one(depth: int = 0):
        kind = rng.randrange(6 if depth < 2 else 4)
        if kind == 0:
            return rng.randrange(-2**70, 2**70)
        if kind == 1:
            return rng.randrange(0, 32000)
        if kind == 2:
            return "".join(rng.choice("abcxyz@0") for _ in range(rng.randrange(8)))
        if kind == 3:
            return None
        return tuple(one(depth + 1) for _ in range(rng.randrange(0, 6 if kind == 4 else 300)))

    return [tuple(one() for _ in range(rng.randrange(0, 5))) for _ in range(n)]


def test_tuple_hash_is_cpythons_tuplehash():
    """Over the items' real hashes -- hash(None) included -- it reproduces the builtin exactly."""
    for value in _values(0):
        assert keys.tuple_hash([hash(item) for item in value]) == hash(value), value
    assert keys.tuple_hash([]) == hash(())


def test_stable_hash_is_the_builtin_where_no_none_occurs():
    for value in _values(1):
        if "None" not in repr(value):
            assert keys.stable_hash(value) == hash(value)
    assert keys.stable_hash(tuple(range(256))) == hash(tuple(range(256)))


def test_stable_hash_is_cpython_312s_for_none():
    """CPython >= 3.12's none_hash is the constant 0xFCA86420 (Objects/object.c); below it, an address."""
    assert keys.stable_hash(None) == keys.NONE_HASH_312 == 0xFCA86420
    value = (5, tuple(range(256)), None)
    assert keys.stable_hash(value) == keys.tuple_hash([hash(5), hash(tuple(range(256))), 0xFCA86420])
    if sys.version_info >= (3, 12):  # there the builtin *is* the target, on every value
        for value in _values(2):
            assert keys.stable_hash(value) == hash(value)
    else:
        assert keys.needs_fix()


def _hash_in_fresh_interpreter(value: str) -> dict:
    code = ("import importlib.util, json, sys; s = importlib.util.spec_from_file_location('k', sys.argv[1]); "
            "k = importlib.util.module_from_spec(s); s.loader.exec_module(k); v = eval(sys.argv[2]); "
            "print(json.dumps({'stable': k.stable_hash(v), 'builtin': hash(v), 'none': hash(None)}))")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, "-c", code, keys.__file__, value], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_stable_hash_agrees_across_processes_where_the_builtin_does_not():
    value = "(12345, tuple(range(256)), None)"
    a, b = _hash_in_fresh_interpreter(value), _hash_in_fresh_interpreter(value)
    assert a["stable"] == b["stable"] == keys.stable_hash(eval(value))
    # The defect, where this machine shows it (ASLR moves None): same seed, different builtin hashes.
    assert (a["builtin"] == b["builtin"]) == (a["none"] == b["none"])


_TOKEN_DB = '''
import abc
class TokenDatabase(metaclass=abc.ABCMeta):
    @abc.abstractmethod
    def __init__(self, algorithm="builtin"):
        self.hash_func = hash if algorithm == "builtin" else (lambda v: 7)
    def key(self, prefix, tokens, extra=None):
        return self.hash_func((prefix, tuple(tokens), extra))
class ChunkedTokenDatabase(TokenDatabase):
    def __init__(self, algorithm="builtin"):
        super(ChunkedTokenDatabase, self).__init__(algorithm)
'''


def test_fixup_swaps_only_the_builtin_and_uninstall_restores_it(shim, pkgs):
    """The fix-up through the real profile machinery (a stand-in module shaped like 0.3.7's)."""
    (pkgs / "lmcache-0.3.7.dist-info").mkdir()
    (pkgs / "lmcache-0.3.7.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lmcache\nVersion: 0.3.7\n")
    (pkgs / "lmcache" / "v1").mkdir()
    (pkgs / "lmcache" / "v1" / "__init__.py").write_text("")
    (pkgs / "lmcache" / "v1" / "token_database.py").write_text(_TOKEN_DB)
    shim.install(backend="cpu")
    import lmcache.v1.token_database as td

    builtin, other = td.ChunkedTokenDatabase(), td.ChunkedTokenDatabase("sha256")
    assert builtin.hash_func is keys.stable_hash and other.hash_func is not keys.stable_hash
    assert builtin.key(1, [2, 3]) == keys.stable_hash((1, (2, 3), None))
    assert any("TokenDatabase.__init__" in p for p in shim.status()["patched_attributes"])
    shim.uninstall()
    assert td.ChunkedTokenDatabase().hash_func is hash


def _release(version: str) -> Path:
    path = ENVS / f"lmcache-{version}"
    if not (path / "lmcache" / "__init__.py").is_file():
        pytest.fail(f"LMCache {version} is not installed in {path}: run `make lmcache-envs`")
    return path


@pytest.mark.lmcache
def test_real_lmcache_037_keys_are_cpython_312s():
    """Real LMCache 0.3.7 through the shim: the probe key is the one CPython >= 3.12 computes, so an
    unmodified 0.3.7 prefill node on Python >= 3.12 and this node agree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "sitecustomize"), str(_release("0.3.7")), str(REPO)]),
               HPU_SHIM="1", HPU_SHIM_BACKEND="cpu", PYTHONHASHSEED="0", LMCACHE_TRACK_USAGE="false")
    spec = {"model_name": "probe-model", "world_size": 1, "dtype": "bfloat16", "kv_shape": [4, 2, 32]}
    child = run_child([sys.executable, "-m", "hpu_shim.compat.keys", json.dumps(spec)], env=env, timeout=600)
    got = child.one()
    assert "error" not in got, got.get("traceback", got)
    assert got["hash_fixed"] and got["hash_func"] == "stable_hash"
    expected = keys.stable_hash((got["none_hash"], tuple(range(got["chunk_size"])), None))
    assert got["probe_key"] == f"vllm@probe-model@1@0@{expected:x}"
