"""P2: KV gather/scatter throughput on CPU tensors, side by side in one process per size.

Variants run round-robin, so that they share the machine's noise: the memcpy bound (one plain
copy of the same bytes), the shim's ``kv_transfer.gather`` (store: paged -> buffer) and
``scatter`` (retrieve), and LMCache 0.5.6's ``torch_ops.multi_layer_kv_transfer`` called as its
connector calls it: once per 256-token chunk, into contiguous memory objects, with per-layer
tensor views (never its pointer mode, which would dlopen a CUDA runtime). LMCache's, 5-15x
slower, run in the first rounds only, to keep the bench short. The KV cache is LMCache's 5-D
``[2, NB, BS, H, D]`` per layer, with vLLM slot mappings: blocks in random order, ``block_size``
contiguous slots each. Every variant writes into preallocated buffers, like the memcpy.

At the smallest size the shim's kernels are also timed with per-chunk memory objects: as its
connector calls them today (a fresh result, then copies; a ``torch.cat`` before scattering), and
reading/writing the objects in place (``out=[...]``, a list ``host``).
"""

from __future__ import annotations

import time

from . import _proc, report
from .config import Options
from .report import Row, verdict

__all__ = ["run", "measure"]

HEADS, HEAD_DIM, BLOCK, CHUNK = 8, 128, 128, 256
MIN_VS_MEMCPY, MIN_VS_LMCACHE = 0.6, 3.0
FORMAT = "NL_X_TWO_NB_BS_NH_HS"  # LMCache's name for per-layer [2, NB, BS, H, D]
SIDES = {"store": "paged -> buffer", "retrieve": "buffer -> paged"}


def _lmcache_ops():
    """(transfer, D2H, H2D, format) from LMCache's torch_ops, or None when it is not importable."""
    try:
        from lmcache.lmcache_native import EngineKVFormat, TransferDirection
        from lmcache.v1.platform.torch_ops.mem_kernels import multi_layer_kv_transfer
    except ImportError:
        return None
    return multi_layer_kv_transfer, TransferDirection.D2H, TransferDirection.H2D, getattr(EngineKVFormat, FORMAT)


def measure(tokens: int, layers: int, rounds: int, lmcache_rounds: int, per_chunk: bool) -> dict:
    import torch

    from ..transfer import kv_transfer

    hidden, blocks = HEADS * HEAD_DIM, tokens // BLOCK + 16
    paged = torch.empty(layers, 2, blocks, BLOCK, HEADS, HEAD_DIM, dtype=torch.bfloat16)
    paged.view(torch.int16).random_()  # arbitrary bit patterns: every comparison below is on raw bits
    kv = list(paged.unbind(0))
    _, views = kv_transfer.normalize(kv)
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(0))[: tokens // BLOCK]
    slots = (order[:, None] * BLOCK + torch.arange(BLOCK)).flatten()
    starts = list(range(0, tokens, CHUNK))
    ends = [min(s + CHUNK, tokens) for s in starts]
    out = torch.zeros(2, layers, tokens, hidden, dtype=torch.bfloat16)  # zeros: no page faults while timed
    objs = torch.zeros(len(starts), 2, layers, CHUNK, hidden, dtype=torch.bfloat16)  # LMCache memory objects
    source = paged.view(-1)[: out.numel()]
    noop = lambda: None  # noqa: E731  (CPU: mark_step and synchronize are no-ops)

    variants = {
        "memcpy": lambda: objs.view(-1).copy_(source),
        "shim_store": lambda: kv_transfer.gather(views, slots, starts, ends, noop, out=out),
        "shim_retrieve": lambda: kv_transfer.scatter(views, out, slots, starts, ends, noop, noop),
    }
    ops = _lmcache_ops()
    if ops is not None:
        transfer, d2h, h2d, fmt = ops
        pages = [layer.view(2, blocks * BLOCK, hidden) for layer in kv]

        def lmcache(direction):
            for i, (s, e) in enumerate(zip(starts, ends)):
                transfer(objs[i], pages, slots[s:e], torch.device("cpu"), blocks * BLOCK, direction, fmt, BLOCK)

        variants["lmcache_store"] = lambda: lmcache(d2h)
        variants["lmcache_retrieve"] = lambda: lmcache(h2d)
    if per_chunk:
        chunks = list(objs.unbind(0))

        def today_store():  # what the shim's connector does: fresh result, then a copy into each object
            host = kv_transfer.gather(views, slots, starts, ends, noop)
            for obj, s, e in zip(chunks, starts, ends):
                obj[:, :, : e - s].copy_(host[:, :, s:e])

        def today_retrieve():
            kv_transfer.scatter(views, torch.cat([o[:, :, : e - s] for o, s, e in zip(chunks, starts, ends)], dim=2),
                                slots, starts, ends, noop, noop)

        variants.update(today_store=today_store, today_retrieve=today_retrieve,
                        chunks_store=lambda: kv_transfer.gather(views, slots, starts, ends, noop, out=chunks),
                        chunks_retrieve=lambda: kv_transfer.scatter(views, chunks, slots, starts, ends, noop, noop))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(rounds):
        for name, fn in variants.items():  # order matters: each retrieve writes back what its store read
            if name.startswith("lmcache") and i >= lmcache_rounds:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    exact = None
    if ops is not None:  # the shim's gather and LMCache's, of the same paged cache, bit for bit
        kv_transfer.gather(views, slots, starts, ends, noop, out=out)
        variants["lmcache_store"]()
        exact = all(torch.equal(out[:, :, s:e].view(torch.int16), objs[i].view(torch.int16))
                    for i, (s, e) in enumerate(zip(starts, ends)))
    return {"tokens": tokens, "layers": layers, "bytes": out.numel() * out.element_size(), "times": times,
            "exact": exact, "lmcache": ops is not None, "threads": torch.get_num_threads()}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _need(tokens: int, layers: int) -> int:
    """Bytes a size needs: paged cache, shim buffer, memory objects, plus 20% for temporaries."""
    per = tokens * layers * 2 * HEADS * HEAD_DIM * 2
    return int(per * 3.6)


def _point(r: dict) -> dict:
    rates = {name: r["bytes"] / _median(ts) / 1e9 for name, ts in r["times"].items()}
    ratios = {}
    for side in SIDES:
        ratios[f"{side}_vs_memcpy"] = rates[f"shim_{side}"] / rates["memcpy"]
        if r["lmcache"]:
            ratios[f"{side}_vs_lmcache"] = rates[f"shim_{side}"] / rates[f"lmcache_{side}"]
    return {"tokens": r["tokens"], "rates": {k: v for k, v in rates.items() if k in report.LABELS},
            "all_rates": rates, "ratios": ratios, "exact": r["exact"]}


def run(opts: Options) -> tuple[list[Row], dict]:
    lmc = _proc.release(opts.envs, opts.native_release)
    environ = _proc.env([lmc] if lmc else [], opts.cache)
    sweep: list[dict] = []
    rows: list[Row] = []
    target = f">= {MIN_VS_MEMCPY}x memcpy, >= {MIN_VS_LMCACHE:g}x LMCache torch_ops"
    for i, tokens in enumerate(opts.p2_tokens):
        need, free = _need(tokens, opts.p2_layers), report.mem_available()
        if free and need > free:
            for side in SIDES:
                rows.append(Row("P2", _figure(side, tokens, opts.p2_layers),
                                f"skipped: needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available",
                                target, "SKIP"))
            continue
        result = _proc.run_child("p2_throughput", {"tokens": tokens, "layers": opts.p2_layers,
                                                   "rounds": opts.p2_rounds, "lmcache_rounds": opts.p2_lmcache_rounds,
                                                   "per_chunk": i == 0}, environ)
        point = _point(result)
        point["raw"] = result
        sweep.append(point)
        rows.extend(_rows(point, opts, target))
    return rows, {"sweep": sweep, "lmcache_release": opts.native_release if lmc else None,
                  "shape": f"{opts.p2_layers} layers, {HEADS} KV heads x {HEAD_DIM}, bf16, block {BLOCK}, "
                           f"chunk {CHUNK}"}


def _figure(side: str, tokens: int, layers: int) -> str:
    gib = tokens * layers * 2 * HEADS * HEAD_DIM * 2 / 2**30
    return f"{side} ({SIDES[side]}), {report.size(tokens)} tokens = {gib:.2f} GiB"


def _rows(p: dict, opts: Options, target: str) -> list[Row]:
    rows = []
    for side in SIDES:
        rates, ratios = p["all_rates"], p["ratios"]
        value = (f"{rates[f'shim_{side}']:.1f} GB/s = {ratios[f'{side}_vs_memcpy']:.2f}x memcpy "
                 f"({rates['memcpy']:.1f} GB/s)")
        ok = ratios[f"{side}_vs_memcpy"] >= MIN_VS_MEMCPY
        if f"{side}_vs_lmcache" in ratios:
            value += f", {ratios[f'{side}_vs_lmcache']:.1f}x LMCache ({rates[f'lmcache_{side}']:.2f} GB/s)"
            ok = ok and ratios[f"{side}_vs_lmcache"] >= MIN_VS_LMCACHE
        else:
            value += f", LMCache {opts.native_release} not installed"
        if side == "store" and p["exact"] is not None:
            value += ", bit-exact vs LMCache" if p["exact"] else ", NOT bit-exact vs LMCache"
            ok = ok and p["exact"]
        rows.append(Row("P2", _figure(side, p["tokens"], p["raw"]["layers"]), value, target, verdict(ok)))
    if "today_store" in p["all_rates"]:
        rates = p["all_rates"]
        x = lambda name: f"{rates[name]:.1f} GB/s = {rates[name] / rates['memcpy']:.2f}x"  # noqa: E731
        for side, today, direct in (("store", "a fresh result + a copy into each", "gather(out=[objects])"),
                                    ("retrieve", "torch.cat of the objects + scatter", "scatter([objects])")):
            rows.append(Row("P2", f"{side} with per-chunk memory objects, {report.size(p['tokens'])} tokens",
                            f"the shim's connector, {direct}: {x(f'chunks_{side}')} memcpy; through one "
                            f"intermediate tensor ({today}): {x(f'today_{side}')}", "report it", "INFO"))
    return rows
