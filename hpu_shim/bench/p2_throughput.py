"""P2: KV store / retrieve throughput through LMCache's engine: the path users run.

One fresh process per platform and size, configured the way users run it (``sitecustomize`` +
``HPU_SHIM=1``): the emulated HPU in lazy and in eager mode (vllm-gaudi's per-layer
``TensorTuple((K, V))`` of ``[NB, 128, H, D]``), and the cpu backend with vLLM-CPU's per-layer
``[NB, H, 128, 2 * D]`` cache. LMCache's own engine (``LMCacheEngineBuilder``, local CPU backend)
runs ``store`` and ``retrieve`` with the connector LMCache builds for vLLM (``CreateGPUConnector``,
so whatever the shim substitutes), and the slot mapping already on the device, as LMCache's vLLM
adapter hands it over (``slot_mapping.cuda()``). Side by side, in the same process and round-robin
so they share the machine's noise:

* the memcpy bound: one plain copy of the same bytes between the device cache and host memory
  (through a host buffer of at most 1 GiB, reused, so the largest size still fits in RAM);
* LMCache's own path, swapped into the same engine (``engine.gpu_connector``): on the emulated HPU
  its ``VLLMPagedMemHPUConnectorV2`` (the class LMCache ships, without the shim's subclasses); on
  the CPU its ``torch_ops.multi_layer_kv_transfer`` kernel called per memory object, on its nearest
  layout (``[2, NB, BS, H, D]`` per layer, the same bytes), because it has no vLLM-CPU connector.

Before timing, each path stores, the whole cache is zeroed, and it retrieves: ``torch.equal`` on
the restored slots of every layer (regenerated from their seeds) and zeros everywhere else. Every
timed store is checked with ``lookup`` and every retrieve by its returned mask. Sizes that cannot
fit in this machine's memory are reported as FAIL with the reason, never dropped. The shim's
``hpu_shim.transfer`` kernel with a host slot mapping and one preallocated output (no engine) is an
extra row, labelled as such: users never take that path.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

from . import _proc, report
from .config import Options
from .report import Row, median, verdict

__all__ = ["run", "measure", "measure_kernel", "PLATFORMS"]

HEADS, HEAD_DIM, BLOCK, CHUNK = 8, 128, 128, 256
SPARE_BLOCKS = 16
MIN_VS_MEMCPY, MIN_VS_OWN, OWN_TARGET_TOKENS = 0.6, 3.0, 16384
RING_BYTES = 1 << 30
DIRECTIONS = {"store": "device -> host", "retrieve": "host -> device"}


@dataclasses.dataclass(frozen=True)
class Platform:
    label: str
    backend: str
    lazy: str | None  # PT_HPU_LAZY_MODE, None off the HPU
    layout: str
    own: str  # LMCache's own path on this platform, as rows name it


#: Where P2 runs, each in its own processes (backend and lazy mode are process-wide).
PLATFORMS: dict[str, Platform] = {
    "hpu-lazy": Platform("emulated HPU, lazy", "hpu", "1", "vllm-gaudi TensorTuple((K, V)) [NB, 128, H, D]",
                         "LMCache's own VLLMPagedMemHPUConnectorV2"),
    "hpu-eager": Platform("emulated HPU, eager", "hpu", "0", "vllm-gaudi TensorTuple((K, V)) [NB, 128, H, D]",
                          "LMCache's own VLLMPagedMemHPUConnectorV2"),
    "cpu": Platform("cpu backend", "cpu", None, "vLLM-CPU [NB, H, 128, 2*D]",
                    "LMCache's torch_ops.multi_layer_kv_transfer per chunk"),
}


def kv_bytes(tokens: int, layers: int) -> int:
    return tokens * layers * 2 * HEADS * HEAD_DIM * 2  # K and V, bf16


def _need(tokens: int, layers: int) -> dict[str, int]:
    """What one size holds at once: the paged cache, LMCache's local CPU pool, the memcpy buffer."""
    moved = kv_bytes(tokens, layers)
    return {"paged KV cache": kv_bytes(tokens + SPARE_BLOCKS * BLOCK, layers),
            "LMCache local CPU store": _pool_bytes(moved), "memcpy buffer": min(moved, RING_BYTES)}


def _pool_bytes(moved: int) -> int:
    return int(moved * 1.05) + (256 << 20)


# -- the measurement process ------------------------------------------------------------------------------

def _limit_memory() -> int:
    """Cap this process's address space at what the machine has free, so running out of memory is a
    clear ``RuntimeError`` reported in the row instead of the kernel's OOM killer picking a process."""
    import resource

    free = report.mem_available()
    if not free:
        return 0
    with open("/proc/self/status", encoding="utf-8") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    limit = vm + free - (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm", encoding="utf-8") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fill(layer: int, part: int, shape: tuple, dtype: Any) -> Any:
    """Arbitrary bit patterns, reproducible per (layer, part): the reference is regenerated to compare."""
    import torch

    g = torch.Generator().manual_seed(7919 * layer + part)
    return torch.randint(-(1 << 15), 1 << 15, shape, dtype=torch.int16, generator=g).view(dtype)


def _build_kv(platform: Platform, layers: int, blocks: int, device: Any) -> list:
    import torch

    if platform.backend == "hpu":
        from ..testing._vllm_gaudi import TensorTuple

        shape = (blocks, BLOCK, HEADS, HEAD_DIM)
        return [TensorTuple(tuple(_fill(li, p, shape, torch.bfloat16).to(device) for p in (0, 1)))
                for li in range(layers)]
    return [_fill(li, 0, (blocks, HEADS, BLOCK, 2 * HEAD_DIM), torch.bfloat16).to(device) for li in range(layers)]


def _parts(platform: Platform, layer: Any) -> list:
    """The tensors of one layer (K and V on HPU; the one fused tensor on vLLM-CPU)."""
    return list(layer) if platform.backend == "hpu" else [layer]


def _blocks_view(platform: Platform, path: str, part: Any) -> tuple[Any, int]:
    """``part`` as the layout ``path`` moves blocks in, and its block dimension. LMCache's own CPU kernel
    reads the vLLM-CPU bytes as ``[2, NB, BS, H*D]`` (its nearest layout), so its blocks lie elsewhere."""
    if platform.backend == "cpu" and path == "own":
        return part.view(2, part.shape[0], BLOCK, HEADS * HEAD_DIM), 1
    return part, 0


def _verify(platform: Platform, path: str, kv: list, blocks_used: Any) -> bool:
    """torch.equal on every restored slot (against the regenerated fill) and zeros everywhere else."""
    import torch

    for li, layer in enumerate(kv):
        for p, part in enumerate(_parts(platform, layer)):
            got, dim = _blocks_view(platform, path, part.cpu().view(torch.int16))
            want, _ = _blocks_view(platform, path, _fill(li, p, tuple(part.shape), torch.bfloat16).view(torch.int16))
            per_block = torch.zeros(got.shape[dim], dtype=torch.bool)
            per_block[blocks_used] = True
            mask = per_block.view(*([1] * dim), -1, *([1] * (got.dim() - dim - 1))).expand(got.shape)
            if not (torch.equal(got[mask], want[mask]) and not got[~mask].any()):
                return False
    return True


def _lmcache_engine(tokens: int, layers: int, device: Any) -> tuple:
    import inspect

    import torch
    from lmcache.v1.cache_engine import LMCacheEngineBuilder
    from lmcache.v1.config import LMCacheEngineConfig
    from lmcache.v1.gpu_connector import CreateGPUConnector
    from lmcache.v1.metadata import LMCacheMetadata
    from lmcache.utils import EngineType

    gib = _pool_bytes(kv_bytes(tokens, layers)) / 2**30
    config = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=gib)
    params = inspect.signature(LMCacheMetadata).parameters
    kwargs = dict(model_name="hpu-shim-bench", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
                  kv_dtype=torch.bfloat16, kv_shape=(layers, 2, CHUNK, HEADS, HEAD_DIM), use_mla=False,
                  chunk_size=CHUNK)
    metadata = LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})
    connector = CreateGPUConnector(config, metadata, EngineType.VLLM)
    name = f"bench-{os.getpid()}"
    engine = LMCacheEngineBuilder.get_or_create(name, config, metadata, connector, lambda t, s: None,
                                                lambda o, s: o)
    if hasattr(engine, "post_init"):
        engine.post_init()
    return engine, connector, metadata


def _describe(connector: Any) -> str:
    cls = type(connector)
    sub = getattr(cls, "__hpu_shim_substitute__", None)
    return f"{cls.__name__} ({sub})" if sub else f"{cls.__module__}.{cls.__name__}"


def _lmcache_class(cls: type) -> type:
    """The class LMCache itself ships: ``cls`` without the shim's substitute subclass and its mixins."""
    for klass in cls.__mro__:
        if "__hpu_shim_substitute__" not in vars(klass) and not klass.__module__.startswith("hpu_shim"):
            return klass
    raise TypeError(f"no LMCache class under {cls!r}")


class TorchOpsConnector:
    """LMCache's CPU kernel, ``torch_ops.multi_layer_kv_transfer``, called once per memory object as its
    connectors call their kernel, on its ``[2, NB, BS, H, D]`` layout over the same bytes as the cache."""

    def __init__(self, kv: list, blocks: int, memory_format: Any):
        import torch
        from lmcache.lmcache_native import EngineKVFormat, TransferDirection
        from lmcache.v1.platform.torch_ops.mem_kernels import multi_layer_kv_transfer

        self._transfer, self._fmt = multi_layer_kv_transfer, EngineKVFormat.NL_X_TWO_NB_BS_NH_HS
        self._d2h, self._h2d, self._memory_format = TransferDirection.D2H, TransferDirection.H2D, memory_format
        self._pages = [t.view(2, blocks * BLOCK, HEADS * HEAD_DIM) for t in kv]
        self._rows, self._device = blocks * BLOCK, torch.device("cpu")

    def _run(self, memory_objs, starts, ends, slot_mapping, direction) -> None:
        for obj, start, end in zip(memory_objs, starts, ends):
            self._transfer(obj.tensor, self._pages, slot_mapping[start:end], self._device, self._rows, direction,
                           self._fmt, BLOCK)

    def batched_from_gpu(self, memory_objs, starts, ends, **kwargs) -> None:
        self._run(memory_objs, starts, ends, kwargs["slot_mapping"], self._d2h)
        for obj in memory_objs:
            obj.metadata.fmt = self._memory_format.KV_2LTD

    def batched_to_gpu(self, memory_objs, starts, ends, **kwargs) -> None:
        self._run(memory_objs, starts, ends, kwargs["slot_mapping"], self._h2d)


def _own_connector(platform: Platform, connector: Any, metadata: Any, kv: list, blocks: int, device: Any) -> Any:
    if platform.backend == "hpu":
        import lmcache.v1.gpu_connector.hpu_connector as hpu_connector

        cls = _lmcache_class(hpu_connector.VLLMPagedMemHPUConnectorV2)
        return cls.from_metadata(metadata, getattr(connector, "use_gpu", False), device)
    from lmcache.v1.memory_management import MemoryFormat

    return TorchOpsConnector(kv, blocks, MemoryFormat)


class _Memcpy:
    """One plain copy of the moved bytes between the device cache and host memory, through a reused buffer."""

    def __init__(self, platform: Platform, kv: list, tokens: int):
        import torch

        per_part = tokens * HEADS * HEAD_DIM * (1 if platform.backend == "hpu" else 2)
        self.sources = [part.view(-1)[:per_part] for layer in kv for part in _parts(platform, layer)]
        slots = max(1, min(len(self.sources), RING_BYTES // (per_part * 2)))
        self.ring = torch.zeros(slots, per_part, dtype=torch.bfloat16)  # zeros: no page faults while timed

    def store(self) -> None:
        for i, src in enumerate(self.sources):
            self.ring[i % len(self.ring)].copy_(src)

    def retrieve(self) -> None:
        for i, dst in enumerate(self.sources):
            dst.copy_(self.ring[i % len(self.ring)])


def measure(platform: str, tokens: int, layers: int, rounds: int, own_rounds: int, kernel: bool = False) -> dict:
    """One platform and size in this process; with ``kernel``, the kernel-only row too, once the engine is gone."""
    import gc

    import torch  # noqa: F401  (imported before the cap: their libraries' address space is not data)
    import lmcache.v1.cache_engine  # noqa: F401

    limit = _limit_memory()
    result = _engine_run(PLATFORMS[platform], tokens, layers, rounds, own_rounds)
    result["rlimit_as"] = limit
    gc.collect()
    if kernel:
        result["kernel"] = measure_kernel(tokens, layers, rounds)
    return result


def _engine_run(plat: Platform, tokens: int, layers: int, rounds: int, own_rounds: int) -> dict:
    import torch

    from .. import testing as emu

    device = torch.device("hpu:0" if plat.backend == "hpu" else "cpu")
    blocks = tokens // BLOCK + SPARE_BLOCKS
    rss = {"start": _rss()}
    engine, shim, metadata = _lmcache_engine(tokens, layers, device)
    rss["engine"] = _rss()
    kv = _build_kv(plat, layers, blocks, device)
    rss["kv"] = _rss()
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(0))[: tokens // BLOCK]
    slots = (order[:, None] * BLOCK + torch.arange(BLOCK)).flatten().to(device)  # on the device, as LMCache's
    token_ids = torch.arange(tokens) % 30000  # adapter hands it to the engine
    own = _own_connector(plat, shim, metadata, kv, blocks, device)
    memcpy = _Memcpy(plat, kv, tokens)
    paths = {"shim": shim, "own": own}

    def store(path: str) -> None:
        engine.gpu_connector = paths[path]
        engine.store(token_ids, kvcaches=kv, slot_mapping=slots)

    def retrieve(path: str) -> None:
        engine.gpu_connector = paths[path]
        got = engine.retrieve(token_ids, kvcaches=kv, slot_mapping=slots)
        if int(got.sum()) != tokens:
            raise RuntimeError(f"{path} retrieve restored {int(got.sum())} of {tokens} tokens")

    def stored_check(path: str) -> None:
        hit = engine.lookup(token_ids)
        if hit != tokens:
            raise RuntimeError(f"{path} store kept {hit} of {tokens} tokens (LMCache's local CPU store full?)")

    exact, counts = {}, {}
    for path in paths:  # correctness first (also the warm-up): fill, store, zero everything, retrieve, compare
        for li, layer in enumerate(kv):
            for p, part in enumerate(_parts(plat, layer)):
                part.copy_(_fill(li, p, tuple(part.shape), torch.bfloat16))
        with emu.count() as c_store:
            store(path)
        stored_check(path)
        for layer in kv:
            for part in _parts(plat, layer):
                part.zero_()
        with emu.count() as c_retrieve:
            retrieve(path)
        exact[path] = _verify(plat, path, kv, order)
        counts[path] = {"store": c_store.as_dict(), "retrieve": c_retrieve.as_dict()}
        engine.clear()
        rss[f"verified {path}"] = _rss()
    times: dict[str, list[float]] = {f"{p}_{d}": [] for p in ("memcpy", *paths) for d in DIRECTIONS}
    for i in range(rounds):  # round-robin: every path sees the same machine
        for path in ("memcpy", *paths):
            if path == "own" and i >= own_rounds:
                continue
            for direction in DIRECTIONS:
                fn = getattr(memcpy, direction) if path == "memcpy" else (
                    lambda d=direction, p=path: (store if d == "store" else retrieve)(p))
                start = time.perf_counter()
                fn()
                times[f"{path}_{direction}"].append(time.perf_counter() - start)
                if path != "memcpy" and direction == "store":
                    stored_check(path)
            if path != "memcpy":
                engine.clear()
    from lmcache.v1.cache_engine import LMCacheEngineBuilder

    LMCacheEngineBuilder.destroy(f"bench-{os.getpid()}")
    return {"platform": next(k for k, v in PLATFORMS.items() if v == plat), "tokens": tokens, "layers": layers,
            "bytes": kv_bytes(tokens, layers), "times": times, "exact": exact, "counts": counts,
            "shim_connector": _describe(shim), "own_connector": _describe(own), "rss": {**rss, "end": _rss()},
            "peak_rss": _peak_rss(), "threads": torch.get_num_threads(),
            "lazy": emu.is_lazy() if plat.backend == "hpu" else None}


# -- the kernel-only extra row (no engine, host slot mapping, preallocated output) -------------------------

def measure_kernel(tokens: int, layers: int, rounds: int) -> dict:
    import torch

    from .. import transfer

    blocks = tokens // BLOCK + SPARE_BLOCKS
    paged = torch.empty(layers, 2, blocks, BLOCK, HEADS, HEAD_DIM, dtype=torch.bfloat16)
    paged.view(torch.int16).random_()
    cache = transfer.kv_cache(list(paged.unbind(0)))
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(0))[: tokens // BLOCK]
    slots = (order[:, None] * BLOCK + torch.arange(BLOCK)).flatten()
    starts = list(range(0, tokens, CHUNK))
    ends = [min(s + CHUNK, tokens) for s in starts]
    out = torch.zeros(2, layers, tokens, HEADS * HEAD_DIM, dtype=torch.bfloat16)
    objs = [out[:, :, s:e] for s, e in zip(starts, ends)]  # one memory object per chunk, in one buffer
    source = paged.view(-1)[: out.numel()]
    variants = {"memcpy_store": lambda: out.view(-1).copy_(source),
                "kernel_store": lambda: transfer.store(cache, slots, starts, ends, objs),
                "kernel_retrieve": lambda: transfer.retrieve(cache, objs, slots, starts, ends)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"tokens": tokens, "layers": layers, "bytes": out.numel() * out.element_size(), "times": times}


# -- the parent: rows ---------------------------------------------------------------------------------

def _environ(opts: Options, plat: Platform, release: Any) -> dict:
    from ..runtime.runtime import bootstrap_dir

    extra = {"HPU_SHIM": "1", "HPU_SHIM_BACKEND": plat.backend}
    if plat.backend == "hpu":
        extra.update(HPU_SHIM_FAKE_HPU="1", PT_HPU_LAZY_MODE=plat.lazy)
    return _proc.env([bootstrap_dir(), release], opts.cache, **extra)


def _figure(direction: str, plat: Platform, tokens: int, layers: int) -> str:
    return (f"{direction} ({DIRECTIONS[direction]}), {report.size(tokens)} tokens = "
            f"{kv_bytes(tokens, layers) / 2**30:.2f} GiB")


def _target(tokens: int) -> str:
    own = f", >= {MIN_VS_OWN:g}x LMCache's own path" if tokens == OWN_TARGET_TOKENS else ""
    return f">= {MIN_VS_MEMCPY}x memcpy{own}"


def _path(release: str, plat: Platform, connector: str, direction: str) -> str:
    call = "engine.store" if direction == "store" else "engine.retrieve"
    return (f"LMCache {release} {call} -> {connector}; slot mapping on the device; {plat.layout}; "
            f"vs memcpy and {plat.own}, same process")


def _rows_for(point: dict, opts: Options, plat: Platform) -> list[Row]:
    rates = {name: point["bytes"] / median(ts) / 1e9 for name, ts in point["times"].items() if ts}
    point["rates"] = rates
    rows = []
    for direction in DIRECTIONS:
        shim, mem = rates[f"shim_{direction}"], rates[f"memcpy_{direction}"]
        own = rates.get(f"own_{direction}")
        vs_mem, vs_own = shim / mem, (shim / own if own else math.nan)
        value = (f"{shim:.2f} GB/s = {vs_mem:.2f}x memcpy ({mem:.2f} GB/s), {vs_own:.2f}x LMCache's own "
                 f"({own:.2f} GB/s)")
        ok = vs_mem >= MIN_VS_MEMCPY and (point["tokens"] != OWN_TARGET_TOKENS or vs_own >= MIN_VS_OWN)
        exact = point["exact"]
        value += "; bit-exact" if exact.get("shim") else "; NOT bit-exact"
        if not exact.get("own"):
            value += " (LMCache's own path not bit-exact)"
        ok = ok and bool(exact.get("shim"))
        rows.append(Row("P2", _figure(direction, plat, point["tokens"], point["layers"]), value,
                        _target(point["tokens"]), verdict(ok), mode=plat.label,
                        path=_path(opts.native_release, plat, point["shim_connector"], direction)))
    return rows


def _fail_rows(why: str, opts: Options, plat: Platform, tokens: int) -> list[Row]:
    return [Row("P2", _figure(d, plat, tokens, opts.p2_layers), why[:300], _target(tokens), "FAIL", mode=plat.label,
                path=_path(opts.native_release, plat, "the connector LMCache builds", d)) for d in DIRECTIONS]


def run(opts: Options) -> tuple[list[Row], dict]:
    release = _proc.release(opts.envs, opts.native_release)
    sweep: list[dict] = []
    rows: list[Row] = []
    raw: dict = {"sweep": sweep, "release": opts.native_release, "failed": [],
                 "shape": f"{opts.p2_layers} layers, {HEADS} KV heads x {HEAD_DIM}, bf16, block {BLOCK}, chunk {CHUNK}"}
    for name in opts.p2_platforms:
        plat = PLATFORMS[name]
        for tokens in opts.p2_tokens:
            if release is None:
                why = f"not run: LMCache {opts.native_release} is not installed in {opts.envs} (make lmcache-envs)"
                rows.extend(_fail_rows(why, opts, plat, tokens))
                continue
            need, free = _need(tokens, opts.p2_layers), report.mem_available()
            if free and sum(need.values()) > free - (1 << 30):
                parts = " + ".join(f"{k} {v / 2**30:.1f}" for k, v in need.items())
                why = (f"cannot fit: needs {sum(need.values()) / 2**30:.1f} GiB ({parts}) at once, "
                       f"{free / 2**30:.1f} GiB available on this machine")
                raw["failed"].append({"platform": name, "tokens": tokens, "why": why})
                rows.extend(_fail_rows(why, opts, plat, tokens))
                continue
            big = tokens > OWN_TARGET_TOKENS
            kwargs = {"platform": name, "tokens": tokens, "layers": opts.p2_layers,
                      "rounds": opts.p2_rounds_big if big else opts.p2_rounds,
                      "own_rounds": opts.p2_own_rounds_big if big else opts.p2_own_rounds,
                      "kernel": plat.backend == "cpu" and tokens == opts.p2_kernel_tokens}
            try:
                point = _proc.run_child("p2_throughput", kwargs, _environ(opts, plat, release), timeout=2400)
            except _proc.BenchError as exc:
                why = f"not measured: {str(exc).splitlines()[0]}"
                raw["failed"].append({"platform": name, "tokens": tokens, "why": str(exc)})
                rows.extend(_fail_rows(why, opts, plat, tokens))
                continue
            rows.extend(_rows_for(point, opts, plat))
            if "kernel" in point:
                raw["kernel"] = point.pop("kernel")
            sweep.append(point)
    rows.extend(_kernel_rows(opts, raw))
    return rows, raw


def _kernel_rows(opts: Options, raw: dict) -> list[Row]:
    """The shim's kernel alone on CPU tensors: an extra row, labelled as not the path users run."""
    tokens = opts.p2_kernel_tokens
    r = raw.get("kernel")  # measured in the cpu platform's process of that size, after its engine was gone
    if r is None:
        r = raw["kernel"] = _proc.run_child("p2_throughput:measure_kernel", {
            "tokens": tokens, "layers": opts.p2_layers, "rounds": opts.p2_rounds}, _proc.env(cache=opts.cache))
    rate = {name: r["bytes"] / median(ts) / 1e9 for name, ts in r["times"].items()}
    return [Row("P2", f"{direction} kernel only, {report.size(tokens)} tokens (extra row: not the path users run)",
                f"{rate[f'kernel_{direction}']:.2f} GB/s = {rate[f'kernel_{direction}'] / rate['memcpy_store']:.2f}x "
                f"memcpy ({rate['memcpy_store']:.2f} GB/s)", "report it", "INFO",
                mode="host CPU tensors, kernel called directly",
                path="hpu_shim.transfer." + direction
                     + " with a host slot mapping and one preallocated output; no LMCache engine")
            for direction in DIRECTIONS]
