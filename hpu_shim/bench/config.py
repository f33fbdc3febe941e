"""Sizes for the full run and for ``--smoke`` (tiny, for CI: the harness must not rot).

One table per run kind: what differs between the full run and the smoke run is data, not branches.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["Options", "options", "FULL", "SMOKE"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    # P1: Llama-8B-like layer count; tiny heads, because sync counts do not depend on tensor size
    p1_releases: tuple[str, ...]
    p1_layers: int
    p1_tokens: tuple[int, ...]
    p1_own: bool  # also count LMCache's own HPU connector (native release) for comparison
    # G: graph signatures over a sweep of prompt lengths, lazy and eager
    sweep_layers: int
    sweep_lengths: int
    sweep_max: int
    # P2: Llama-8B-like KV shape, through LMCache's engine
    p2_layers: int
    p2_tokens: tuple[int, ...]
    p2_platforms: tuple[str, ...]
    p2_rounds: int
    p2_own_rounds: int
    p2_rounds_big: int  # above 16K tokens
    p2_own_rounds_big: int
    p2_kernel_tokens: int
    # P3/P4 timing loops
    loop_calls: int
    loop_rounds: int
    # P5
    import_module: str
    import_pairs: int


FULL = Sizes(p1_releases=("0.3.7", "0.4.2", "0.4.3", "0.5.6"), p1_layers=32, p1_tokens=(4096, 32768, 131072),
             p1_own=True,
             sweep_layers=32, sweep_lengths=64, sweep_max=131072,
             p2_layers=32, p2_tokens=(4096, 16384, 65536), p2_platforms=("hpu-lazy", "hpu-eager", "cpu"),
             p2_rounds=5, p2_own_rounds=3, p2_rounds_big=3, p2_own_rounds_big=2, p2_kernel_tokens=16384,
             loop_calls=20000, loop_rounds=7, import_module="lmcache.v1.cache_engine", import_pairs=5)
# The smoke run exercises every code path once (one CUDA-only and one native-connector release, the HPU
# and the CPU platform); the rest only changes environment variables, which the full run covers.
SMOKE = Sizes(p1_releases=("0.4.2", "0.5.6"), p1_layers=32, p1_tokens=(512,), p1_own=False,
              sweep_layers=4, sweep_lengths=8, sweep_max=4096,
              p2_layers=4, p2_tokens=(512,), p2_platforms=("hpu-lazy", "cpu"),
              p2_rounds=2, p2_own_rounds=1, p2_rounds_big=1, p2_own_rounds_big=1, p2_kernel_tokens=512,
              loop_calls=2000, loop_rounds=3, import_module="lmcache", import_pairs=1)


@dataclasses.dataclass(frozen=True)
class Options(Sizes):
    out: Path = Path("bench-out")
    envs: Path = Path(".envs")
    cache: Path = Path("bench-out/pycache")  # PYTHONPYCACHEPREFIX for every measurement process
    ttft: tuple[Path, ...] = ()
    smoke: bool = False
    native_release: str = "0.5.6"  # the release with LMCache's own HPU connector and torch_ops


def options(*, smoke: bool, max_tokens: int | None = None, **kwargs) -> Options:
    sizes = dataclasses.asdict(SMOKE if smoke else FULL)
    if max_tokens is not None:
        sizes["p2_tokens"] = tuple(t for t in sizes["p2_tokens"] if t <= max_tokens)
    return Options(**sizes, smoke=smoke, **kwargs)
