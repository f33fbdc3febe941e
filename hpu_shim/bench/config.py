"""Sizes for the full run and for ``--smoke`` (tiny, for CI: the harness must not rot)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["Options", "options"]


@dataclasses.dataclass(frozen=True)
class Options:
    out: Path
    envs: Path
    cache: Path  # PYTHONPYCACHEPREFIX for every measurement process
    ttft: Path
    smoke: bool
    shim_release: str  # a CUDA-only release: the shim substitutes its connector
    native_release: str  # the release with LMCache's own HPU connector and torch_ops
    # P1: Llama-8B-like layer count; tiny heads, because sync counts do not depend on tensor size
    p1_layers: int
    p1_tokens: tuple[int, ...]
    # graph signatures over a sweep of prompt lengths
    sweep_layers: int
    sweep_lengths: int
    sweep_max: int
    # P2: Llama-8B-like KV shape
    p2_layers: int
    p2_tokens: tuple[int, ...]
    p2_rounds: int
    p2_lmcache_rounds: int
    # P3/P4 timing loops
    loop_calls: int
    loop_rounds: int
    # P5
    import_module: str
    import_pairs: int


def options(out: Path, envs: Path, cache: Path, ttft: Path, smoke: bool, max_tokens: int,
            shim_release: str, native_release: str) -> Options:
    common = dict(out=out, envs=envs, cache=cache, ttft=ttft, smoke=smoke, shim_release=shim_release,
                  native_release=native_release)
    if smoke:
        return Options(**common, p1_layers=32, p1_tokens=(512, 1024), sweep_layers=4, sweep_lengths=8,
                       sweep_max=4096, p2_layers=4, p2_tokens=(512,), p2_rounds=2, p2_lmcache_rounds=1,
                       loop_calls=2000, loop_rounds=3, import_module="lmcache", import_pairs=1)
    sizes = tuple(t for t in (4096, 8192, 16384, 32768) if t <= max_tokens)  # 32K needs ~13 GiB
    return Options(**common, p1_layers=32, p1_tokens=(4096, 32768, 131072), sweep_layers=32, sweep_lengths=64,
                   sweep_max=131072, p2_layers=32, p2_tokens=sizes, p2_rounds=5, p2_lmcache_rounds=2,
                   loop_calls=20000, loop_rounds=7, import_module="lmcache.v1.cache_engine", import_pairs=5)
