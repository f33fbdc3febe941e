"""Deterministic LMCache chunk keys across processes, nodes and Python versions.

LMCache <= 0.3.x names every chunk by ``hash((prefix_hash, tokens_tuple, extra_keys))`` with the builtin
``hash`` (``pre_caching_hash_algorithm: builtin``, and the fallback whenever vLLM's sha256 helpers
are missing) and ``extra_keys=None``. On CPython < 3.12, ``hash(None)`` is derived from ``None``'s
address, which ASLR moves in every process: the prefill process and the decode process compute
different keys for the same tokens even with ``PYTHONHASHSEED=0``, and a shared store never hits.
CPython 3.12 made it a constant (``none_hash`` returns ``0xFCA86420``), and LMCache >= 0.4 hashes
``()`` instead of ``None`` -- neither helps a 0.3.x deployment on Gaudi images (Python 3.10).

The fix, inside LMCache only: when a token database hashes with the builtin, it hashes with
:func:`stable_hash` instead, which equals the builtin on every value without ``None`` and reproduces
CPython >= 3.12's value where a ``None`` occurs (the tuple hash is CPython's xxHash-based
``tuplehash``). So the keys agree between processes, between nodes, and with an *unmodified* LMCache
0.3.x producer running on Python >= 3.12. Upstream LMCache 0.3.x has no such fix (see
``docs/hetero.md``).
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

__all__ = ["NONE_HASH_312", "stable_hash", "tuple_hash", "needs_fix", "fix_token_database", "lmcache_config",
           "lmcache_metadata", "probe", "PROBE_TOKENS"]

#: ``hash(None)`` on CPython >= 3.12 (Objects/object.c ``none_hash``).
NONE_HASH_312 = 0xFCA86420

_MASK = (1 << 64) - 1
_XXPRIME_1 = 11400714785074694791
_XXPRIME_2 = 14029467366897019727
_XXPRIME_5 = 2870177450012600261


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def tuple_hash(lanes: list[int]) -> int:
    """CPython's ``tuplehash`` (Objects/tupleobject.c, 3.8+, 64-bit) over the items' hashes."""
    acc = _XXPRIME_5
    for lane in lanes:
        acc = (acc + (lane & _MASK) * _XXPRIME_2) & _MASK
        acc = ((acc << 31) | (acc >> 33)) & _MASK
        acc = (acc * _XXPRIME_1) & _MASK
    acc = (acc + (len(lanes) ^ (_XXPRIME_5 ^ 3527539))) & _MASK
    if acc == _MASK:
        return 1546275796
    return _signed(acc)


def _has_none(value: tuple) -> bool:
    return any(item is None or type(item) is tuple for item in value)


def stable_hash(value: Any) -> int:
    """``hash(value)`` as CPython >= 3.12 computes it: ``None`` hashes to a constant, not an address.

    Equal to the builtin for every value that holds no ``None`` (ints, strings, tuples of those),
    so swapping it in changes nothing else. Tuples are walked only where a ``None`` could hide.
    """
    if value is None:
        return NONE_HASH_312
    if type(value) is tuple and _has_none(value):
        return tuple_hash([stable_hash(item) for item in value])
    return hash(value)


stable_hash.__hpu_shim__ = "deterministic hash(None) (CPython >= 3.12 value)"  # type: ignore[attr-defined]


def needs_fix() -> bool:
    """Only CPython < 3.12 hashes ``None`` by address."""
    return sys.version_info < (3, 12)


def fix_token_database(module: Any, ctx: Any) -> None:
    """Fix-up for ``lmcache.v1.token_database``: builtin-hash databases hash with :func:`stable_hash`.

    ``TokenDatabase.__init__`` chooses ``self.hash_func`` (and derives vLLM's ``NONE_HASH`` with it);
    afterwards the builtin is swapped for :func:`stable_hash`, which agrees with it everywhere except
    on ``None``. Databases hashing with vLLM's sha256 are left alone (their hash is deterministic).
    """
    base = getattr(module, "TokenDatabase", None)
    if not isinstance(base, type) or not needs_fix():
        return
    original = base.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if getattr(self, "hash_func", None) is builtins.hash:
            self.hash_func = stable_hash

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    __init__.__doc__ = "hpu_shim: builtin hash -> stable_hash (hash(None) is per-process on Python < 3.12)."
    ctx.patches.patch(base, "__init__", __init__)


# ---- the key fingerprint (``python -m hpu_shim doctor``) ---------------------------------------------
#: The probe: the first chunk of tokens 0, 1, 2, ... Its key is what both nodes must agree on.
PROBE_TOKENS = "0..chunk_size-1"


def lmcache_config() -> Any:
    """LMCache's configuration as its vLLM integration loads it: ``LMCACHE_CONFIG_FILE`` (then
    ``LMCACHE_*`` variables over it) or the ``LMCACHE_*`` variables alone."""
    import os

    from lmcache.v1.config import LMCacheEngineConfig

    path = os.environ.get("LMCACHE_CONFIG_FILE")
    if not path:
        return LMCacheEngineConfig.from_env()
    config = LMCacheEngineConfig.from_file(path)
    if hasattr(config, "update_config_from_env"):
        config.update_config_from_env()
    return config


def lmcache_metadata(model_name: str, world_size: int, dtype: Any, kv_shape: tuple, chunk_size: int,
                     use_mla: bool = False) -> Any:
    """LMCache's engine metadata for this release (0.3.x ``LMCacheEngineMetadata``, >= 0.4 ``LMCacheMetadata``)."""
    import inspect

    try:
        from lmcache.v1.metadata import LMCacheMetadata
    except ImportError:
        from lmcache.config import LMCacheEngineMetadata

        return LMCacheEngineMetadata(model_name, world_size, 0, "vllm", dtype, tuple(kv_shape), use_mla)
    params = inspect.signature(LMCacheMetadata).parameters
    kwargs = dict(model_name=model_name, world_size=world_size, local_world_size=world_size, worker_id=0,
                  local_worker_id=0, kv_dtype=dtype, kv_shape=tuple(kv_shape), use_mla=use_mla,
                  chunk_size=chunk_size)
    return LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})


def probe(model_name: str, world_size: int, dtype: str, kv_shape: tuple) -> dict:
    """The chunk key this process's LMCache computes for the probe tokens (imports LMCache).

    ``kv_shape`` is ``(layers, kv_heads, head_size)``. Run it where the workload runs (same
    environment, shim on or off as there): on LMCache 0.3.x the shim changes the key.
    """
    import importlib.metadata

    import torch

    from lmcache.v1 import token_database as td

    config = lmcache_config()
    layers, heads, head_size = (int(x) for x in kv_shape)
    metadata = lmcache_metadata(model_name, world_size, getattr(torch, dtype),
                                (layers, 2, config.chunk_size, heads, head_size), config.chunk_size)
    db = td.ChunkedTokenDatabase(config, metadata)
    _, _, key = next(iter(db.process_tokens(tokens=list(range(config.chunk_size)))))
    func = getattr(db, "hash_func", None)
    return {
        "lmcache": importlib.metadata.version("lmcache"),
        "hash_algorithm": getattr(config, "pre_caching_hash_algorithm", "builtin"),
        "hash_func": getattr(func, "__qualname__", repr(func)),
        "hash_fixed": getattr(func, "__hpu_shim__", None) is not None,
        # <= 0.3.x hash (prefix, tokens, None); >= 0.4 canonicalise None away first
        "hashes_none": not hasattr(td.TokenDatabase, "_canonicalize_hash_inputs"),
        "none_hash": getattr(td, "NONE_HASH", None),
        "chunk_size": config.chunk_size,
        "save_unfull_chunk": getattr(config, "save_unfull_chunk", None),
        "remote_url": getattr(config, "remote_url", None),
        "local_disk": getattr(config, "local_disk", None),
        "probe_key": key.to_string(),
        "hash_of_none": hash(None),
    }


def main(argv: list | None = None) -> int:
    """``python -m hpu_shim.compat.keys '{"model_name": ..., "world_size": ..., "dtype": ..., "kv_shape": [..]}'``:
    emits ``probe()`` (or the error) through ``hpu_shim.testing.results``."""
    import json
    import os
    import traceback

    from ..testing import results

    args = json.loads((sys.argv[1:] if argv is None else argv)[0])
    try:
        out = probe(**args)
    except BaseException as exc:  # the caller shows it
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    results.emit(out)
    sys.stdout.flush()
    os._exit(0)  # LMCache may leave threads behind


if __name__ == "__main__":
    main()
