"""hpu_shim.compat.retrieve: after a failed or rejected chunk, exactly the prefix before it is restored.

The method under test is LMCache's own ``LMCacheEngine._process_tokens_internal``, taken from each
CI release's ``cache_engine.py`` (parsed, not imported: the rest of the engine is not needed) and run
against a storage manager that returns what a store with a damaged chunk returns. Without the fix-up,
0.3.7 - 0.4.3 report the chunk before the failure as restored and never hand it to the connector.
"""

from __future__ import annotations

import ast
import logging
import os
import types
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from hpu_shim.compat import retrieve
from hpu_shim.core.patches import PatchRegistry

REPO = Path(__file__).resolve().parents[2]
ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))
CHUNK, CHUNKS = 256, 4
BUGGY = ("0.3.7", "0.4.2", "0.4.3")
FIXED = ("0.5.6",)


def upstream(version: str, cls: str = "LMCacheEngine", name: str = "_process_tokens_internal"):
    """The release's method, compiled from its source file (annotations dropped, line numbers kept)."""
    path = ENVS / f"lmcache-{version}" / "lmcache" / "v1" / "cache_engine.py"
    if not path.is_file():
        pytest.fail(f"LMCache {version} is not installed in {path.parent.parent.parent}: run `make lmcache-envs`")
    tree = ast.parse(path.read_text(), str(path))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    fn = next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == name)
    fn.decorator_list, fn.returns = [], None
    for arg in fn.args.args + fn.args.kwonlyargs:
        arg.annotation = None
    namespace = {"defaultdict": defaultdict, "CacheEngineKey": Key, "logger": logging.getLogger("upstream")}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


class Key(str):
    def to_string(self) -> str:
        return str(self)


class Obj:
    """A retrieved memory object: shape/dtype/format and a reference count, as LMCache's MemoryObj."""

    def __init__(self, name: str, layers: int = 4, fmt: str = "KV_2LTD", tokens: int = CHUNK):
        self.name, self.refs, self.shape, self.fmt = name, 1, (2, layers, tokens, 64), types.SimpleNamespace(name=fmt)

    def ref_count_down(self) -> None:
        self.refs -= 1

    def get_size(self) -> int:
        return 2 * self.shape[1] * self.shape[2] * 64 * 2

    def get_shape(self):
        return torch.Size(self.shape)

    def get_dtype(self):
        return torch.bfloat16

    def get_memory_format(self):
        return self.fmt


class TokenDatabase:
    calls = 0

    def process_tokens(self, tokens=None, mask=None, request_configs=None, **_):
        TokenDatabase.calls += 1
        for i in range(0, len(tokens), CHUNK):
            yield i, min(i + CHUNK, len(tokens)), Key(f"chunk{i // CHUNK}")


def modules(version: str, objs: dict):
    """cache_engine / storage_manager modules holding the release's method and a store returning ``objs``."""
    class StorageManager:
        def contains(self, key, *_):
            return "RemoteBackend"

        def get_block_mapping(self, chunk_infos):
            return {"RemoteBackend": chunk_infos}

        def batched_get(self, keys, location=None):
            return [objs[k] for k in keys]

    class LMCacheEngine:
        _process_tokens_internal = upstream(version)

        def __init__(self):
            self.storage_manager, self.token_database = StorageManager(), TokenDatabase()
            self.lookup_cache, self.lookup_pins, self.remove_after_retrieve = {}, {}, False
            self.metadata = types.SimpleNamespace(kv_shape=(4, 2, CHUNK, 2, 32), kv_dtype=torch.bfloat16,
                                                  use_mla=False)

    sm = types.ModuleType("lmcache.v1.storage_backend.storage_manager")
    ce = types.ModuleType("lmcache.v1.cache_engine")
    sm.StorageManager, ce.LMCacheEngine = StorageManager, LMCacheEngine
    StorageManager.__module__, LMCacheEngine.__module__ = sm.__name__, ce.__name__
    return sm, ce


def run(version: str, objs: dict, fixed: bool = True):
    sm, ce = modules(version, objs)
    ctx = types.SimpleNamespace(patches=PatchRegistry())
    if fixed:
        retrieve.fix_storage_manager(sm, ctx)
        retrieve.fix_cache_engine(ce, ctx)
    ret_mask = torch.zeros(CHUNK * CHUNKS, dtype=torch.bool)
    chunks, size = ce.LMCacheEngine()._process_tokens_internal(torch.arange(CHUNK * CHUNKS), None, ret_mask)
    return [(str(k), o.name, s, e) for k, o, s, e in chunks], ret_mask, size


def damaged(second) -> dict:
    return {Key(f"chunk{i}"): (second if i == 1 else Obj(f"obj{i}")) for i in range(CHUNKS)}


@pytest.mark.parametrize("version", BUGGY + FIXED)
def test_detects_the_upstream_off_by_one(version):
    assert retrieve.has_off_by_one(upstream(version)) is (version in BUGGY)


@pytest.mark.parametrize("version", BUGGY)
def test_without_the_fix_the_chunk_before_a_failure_is_reported_but_never_written(version):
    """The defect, from the release's own code: 256 tokens reported, chunk 0 not handed over."""
    chunks, ret_mask, _ = run(version, damaged(None), fixed=False)
    assert chunks == [] and int(ret_mask.sum()) == CHUNK


@pytest.mark.parametrize("version", BUGGY + FIXED)
def test_a_failed_chunk_keeps_exactly_the_prefix_before_it(version):
    objs = damaged(None)
    chunks, ret_mask, size = run(version, objs)
    assert chunks == [("chunk0", "obj0", 0, CHUNK)]
    assert ret_mask[:CHUNK].all() and not ret_mask[CHUNK:].any()
    assert size == objs[Key("chunk0")].get_size()
    # chunk 0 is released by the retrieve that transfers it; chunks 2-3 were fetched and are not used
    assert [objs[Key(f"chunk{i}")].refs for i in (0, 2, 3)] == [1, 0, 0]


@pytest.mark.parametrize("version", BUGGY + FIXED)
def test_a_chunk_of_another_model_is_rejected_before_the_transfer(version, caplog):
    bad = Obj("six-layers", layers=6)
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        chunks, ret_mask, _ = run(version, damaged(bad))
    assert chunks == [("chunk0", "obj0", 0, CHUNK)] and int(ret_mask.sum()) == CHUNK
    assert bad.refs == 0
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "hpu_shim"]
    assert "chunk1" in msg and "6 layers" in msg and "4" in msg


@pytest.mark.parametrize("version", BUGGY + FIXED)
def test_nothing_fails_nothing_changes(version):
    objs = damaged(Obj("obj1"))
    TokenDatabase.calls = 0
    chunks, ret_mask, _ = run(version, objs)
    assert TokenDatabase.calls == 1  # the release's own pass only: no second hashing pass when nothing fails
    assert [c[1] for c in chunks] == ["obj0", "obj1", "obj2", "obj3"] and ret_mask.all()
    assert all(o.refs == 1 for o in objs.values())


@pytest.mark.parametrize("version", BUGGY)
def test_a_failed_first_chunk_restores_nothing(version):
    objs = {Key(f"chunk{i}"): (None if i == 0 else Obj(f"obj{i}")) for i in range(CHUNKS)}
    chunks, ret_mask, size = run(version, objs)
    assert chunks == [] and not ret_mask.any() and size == 0
    assert all(o.refs == 0 for o in objs.values() if o is not None)


def test_uninstall_restores_the_releases_methods():
    sm, ce = modules("0.3.7", damaged(None))
    originals = (sm.StorageManager.batched_get, ce.LMCacheEngine._process_tokens_internal)
    ctx = types.SimpleNamespace(patches=PatchRegistry())
    retrieve.fix_storage_manager(sm, ctx)
    retrieve.fix_cache_engine(ce, ctx)
    assert (sm.StorageManager.batched_get, ce.LMCacheEngine._process_tokens_internal) != originals
    ctx.patches.restore_all()
    assert (sm.StorageManager.batched_get, ce.LMCacheEngine._process_tokens_internal) == originals
