"""A quick micro-benchmark of the transfer kernels against a plain memcpy of the same bytes (not a CI test).

``python -m hpu_shim.transfer.microbench [--tokens 4096] [--layers 32] [--heads 8] [--dim 128]
[--layouts kv,vllm_cpu] [--device cpu|hpu] [--rounds 5]`` runs the connector-path call shape:
LMCache memory objects of 256 tokens (``[2, L, 256, hidden]``, one per chunk), a vLLM-style slot
mapping (block size 128; ``--order shuffled``: blocks in no order, as after frees; ``fresh``:
consecutive blocks, as a fresh request gets them), the slot mapping on the cache's device. Each figure is the median over ``rounds`` of (memcpy time / kernel time), memcpy
and kernel timed back to back, so a busy machine slows both alike. ``--device hpu`` installs the
emulated HPU first (``PT_HPU_LAZY_MODE`` picks the mode). Prints one line per (layout, direction).
Run it alone: it allocates ~4x the payload.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

CHUNK, BLOCK = 256, 128


def _paired(base: Callable[[], Any], f: Callable[[], Any], rounds: int) -> tuple[float, float]:
    base(), f()
    ratios, times = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        f()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
        times.append(t2 - t1)
    return statistics.median(ratios), statistics.median(times)


def _cache(layout: str, nb: int, layers: int, heads: int, dim: int, device: str) -> list:
    import torch

    shapes = {"kv": (nb, BLOCK, heads, dim), "5d": (2, nb, BLOCK, heads, dim), "vllm_cpu": (nb, heads, BLOCK, 2 * dim)}
    make = lambda: torch.empty(shapes[layout], dtype=torch.bfloat16, device=device).fill_(1)
    return [(make(), make()) if layout == "kv" else make() for _ in range(layers)]


def run(tokens: int, layers: int, heads: int, dim: int, layouts: list[str], device: str, rounds: int,
        order: str = "shuffled") -> list[str]:
    import torch

    from hpu_shim import transfer

    lines = []
    nb = tokens // BLOCK + 16
    need = -(-tokens // BLOCK)
    if order == "fresh":  # a fresh request: vLLM's free queue hands out consecutive ascending blocks
        ids = torch.arange(need) + 3
    else:  # after frees and reuse: blocks in no particular order
        ids = torch.randperm(nb, generator=torch.Generator().manual_seed(0))[:need]
    sm = (ids[:, None] * BLOCK + torch.arange(BLOCK)).flatten()[:tokens].to(device)
    starts = list(range(0, tokens, CHUNK))
    ends = [min(s + CHUNK, tokens) for s in starts]
    hidden = heads * dim
    objs = [torch.ones(2, layers, CHUNK, hidden, dtype=torch.bfloat16) for _ in starts]
    payload = 2 * layers * tokens * hidden * 2
    src = torch.ones(payload // 2, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    memcpy = lambda: dst.copy_(src)
    for layout in layouts:
        cache = transfer.kv_cache(_cache(layout, nb, layers, heads, dim, device))
        for direction, f in (("store", lambda c=cache: transfer.store(c, sm, starts, ends, objs)),
                             ("retrieve", lambda c=cache: transfer.retrieve(c, objs, sm, starts, ends))):
            ratio, seconds = _paired(memcpy, f, rounds)
            lines.append(f"{device:>3} {layout:>8} {order:>8} {direction:>8} {tokens:>6} tokens x {layers} layers x {hidden}: "
                         f"{ratio:.2f}x memcpy ({payload / seconds / 1e9:.2f} GB/s)")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layouts", default="kv,5d,vllm_cpu")
    p.add_argument("--device", default="cpu", choices=["cpu", "hpu"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--order", default="shuffled", choices=["shuffled", "fresh"])
    a = p.parse_args(argv)
    if a.device == "hpu":
        from hpu_shim import testing

        testing.install_emulator()
    for line in run(a.tokens, a.layers, a.heads, a.dim, a.layouts.split(","), a.device, a.rounds, a.order):
        print(line, flush=True)


if __name__ == "__main__":
    main()
