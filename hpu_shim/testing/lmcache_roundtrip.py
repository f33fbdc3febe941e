"""Store -> lookup -> retrieve through a real LMCache release's own engine, on the emulated HPU.

Used by the tests, ``python -m hpu_shim demo`` and ``make matrix``. Run it in a fresh interpreter
configured like a Gaudi container (``PYTHONPATH=<sitecustomize>:<lmcache release>``,
``HPU_SHIM_FAKE_HPU=1``, and ``HPU_SHIM=1`` or not, to show the shim is what makes it work):

    python -m hpu_shim.testing.lmcache_roundtrip '[{"layout": "kv_tuple", "dtype": "bfloat16"}]'

Each case builds the engine with ``LMCacheEngineBuilder`` and the GPU connector LMCache itself
creates for vLLM (``CreateGPUConnector`` where the release has it, else the adapter's
``VLLMPagedMemGPUConnectorV2(...)`` call), fills a paged KV cache on ``hpu`` with random data,
stores, looks up, wipes, retrieves, and checks ``torch.equal`` on the restored slots plus zeros
everywhere else. It emits one result per case through ``hpu_shim.testing.results`` (a file, not stdout).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["Case", "run_case", "main"]


@dataclasses.dataclass
class Case:
    layout: str = "kv_tuple"  # kv_tuple | flat | 5d | mla
    dtype: str = "bfloat16"
    num_layers: int = 4
    num_blocks: int = 32
    block_size: int = 128
    heads: int = 2
    head_dim: int = 32
    tokens: int = 1000
    chunk_size: int = 256
    slots: str = "random"  # random (per token) | paged (vLLM-style runs of block_size)
    save_unfull_chunk: bool | None = None
    prefix_hit: int = 0  # >0: store only the first N tokens, then look up and retrieve all `tokens`
    corrupt: bool = False  # negative control: flip the stored KV before retrieving
    use_layerwise: bool = False  # store_layer/retrieve_layer generators, as the vLLM adapter drives them
    seed: int = 0


def _metadata(case: Case, dtype: Any) -> Any:
    mla = case.layout == "mla"
    shape = (case.num_layers, 1 if mla else 2, case.chunk_size, 1 if mla else case.heads, case.head_dim)
    try:
        from lmcache.v1.metadata import LMCacheMetadata
    except ImportError:
        from lmcache.config import LMCacheEngineMetadata

        return LMCacheEngineMetadata("hpu-shim-roundtrip", 1, 0, "vllm", dtype, shape, mla)
    params = inspect.signature(LMCacheMetadata).parameters
    kwargs = dict(model_name="hpu-shim-roundtrip", world_size=1, local_world_size=1, worker_id=0,
                  local_worker_id=0, kv_dtype=dtype, kv_shape=shape, use_mla=mla, chunk_size=case.chunk_size)
    return LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})


def _config(case: Case) -> Any:
    from lmcache.v1.config import LMCacheEngineConfig

    kwargs: dict[str, Any] = dict(chunk_size=case.chunk_size, local_cpu=True, max_local_cpu_size=0.5)
    if case.save_unfull_chunk is not None:
        kwargs["save_unfull_chunk"] = case.save_unfull_chunk
    if case.use_layerwise:
        kwargs["use_layerwise"] = True
    params = inspect.signature(LMCacheEngineConfig.from_defaults).parameters
    unknown = [k for k in kwargs if k not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values())]
    if unknown:
        raise TypeError(f"this LMCache release has no config option(s) {unknown}")
    return LMCacheEngineConfig.from_defaults(**kwargs)


def _connector(config: Any, metadata: Any, case: Case, dtype: Any, device: Any) -> Any:
    """The connector LMCache's vLLM integration would create (CreateGPUConnector or the 0.3.x adapter call)."""
    import lmcache.v1.gpu_connector as gc

    create = getattr(gc, "CreateGPUConnector", None)
    if create is not None:
        try:
            from lmcache.utils import EngineType
        except ImportError:  # 0.3.14 takes the engine as a plain string
            return create(config, metadata, "vllm")
        return create(config, metadata, EngineType.VLLM)
    # 0.3.x: vllm_v1_adapter._init_lmcache_engine builds it directly (adapter lines 510-518 in 0.3.7)
    hidden = case.head_dim if case.layout == "mla" else case.heads * case.head_dim
    if case.use_layerwise:
        return gc.VLLMPagedMemLayerwiseGPUConnector(hidden, case.num_layers, use_gpu=True, chunk_size=case.chunk_size,
                                                    dtype=dtype, device=device)
    return gc.VLLMPagedMemGPUConnectorV2(hidden, case.num_layers, use_gpu=True, chunk_size=case.chunk_size,
                                         dtype=dtype, device=device, use_mla=case.layout == "mla")


def _paged_kv(case: Case, dtype: Any, device: Any, gen: Any) -> tuple[list, Any]:
    """The KV cache in the requested layout, and per-layer [slots, hidden] views of it (for checks)."""
    import torch

    nb, bs, h, d = case.num_blocks, case.block_size, case.heads, case.head_dim

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    if case.layout == "5d":
        kv = [rnd(2, nb, bs, h, d) for _ in range(case.num_layers)]
        views = [(t[0].view(nb * bs, -1), t[1].view(nb * bs, -1)) for t in kv]
    elif case.layout == "kv_tuple":  # vllm-gaudi >= 0.11.2: TensorTuple((K, V)) of 4-D views
        from ._vllm_gaudi import TensorTuple

        kv = [TensorTuple((rnd(nb, bs, h, d), rnd(nb, bs, h, d))) for _ in range(case.num_layers)]
        views = [(k.view(nb * bs, -1), v.view(nb * bs, -1)) for k, v, *_ in kv]
    elif case.layout == "flat":  # vllm-gaudi < 0.11.2: raw (K, V, k_scales, v_scales) of flat caches
        kv = [(rnd(nb * bs, h, d), rnd(nb * bs, h, d), None, None) for _ in range(case.num_layers)]
        views = [(k.view(nb * bs, -1), v.view(nb * bs, -1)) for k, v, *_ in kv]
    elif case.layout == "mla":
        kv = [rnd(nb, bs, d) for _ in range(case.num_layers)]
        views = [(t.view(nb * bs, -1),) for t in kv]
    else:
        raise ValueError(f"unknown layout {case.layout!r}: kv_tuple, flat, 5d or mla")
    return kv, views


def _slots(case: Case, gen: Any) -> Any:
    import torch

    total = case.num_blocks * case.block_size
    if case.slots == "random":
        return torch.randperm(total, generator=gen)[: case.tokens]
    blocks = torch.randperm(case.num_blocks, generator=gen)
    runs = (blocks[:, None] * case.block_size + torch.arange(case.block_size)).flatten()
    return runs[: case.tokens]


def run_case(case: Case) -> dict:
    import torch

    from hpu_shim import testing as emu

    from lmcache.v1.cache_engine import LMCacheEngineBuilder

    dtype = getattr(torch, case.dtype)
    device = torch.device("hpu:0")
    gen = torch.Generator().manual_seed(case.seed)
    config, metadata = _config(case), _metadata(case, dtype)
    connector = _connector(config, metadata, case, dtype, device)
    name = f"roundtrip-{os.getpid()}-{id(case)}"
    extra = (lambda t, s: None, lambda o, s: o)  # broadcast_fn, broadcast_object_fn (>= 0.3.4)
    if len(inspect.signature(LMCacheEngineBuilder.get_or_create).parameters) < 6:
        extra = ()
    engine = LMCacheEngineBuilder.get_or_create(name, config, metadata, connector, *extra)
    if hasattr(engine, "post_init"):
        engine.post_init()
    result: dict[str, Any] = {"case": dataclasses.asdict(case),
                              "connector": f"{type(connector).__module__}.{type(connector).__name__}",
                              "substituted": getattr(type(connector), "__hpu_shim_substitute__", None)}
    try:
        kv, views = _paged_kv(case, dtype, device, gen)
        slots_host = _slots(case, gen)
        slots = slots_host.to(device)
        tokens = torch.randint(0, 32000, (case.tokens,), generator=gen)
        stored = case.prefix_hit or case.tokens
        reference = [tuple(v.cpu() for v in layer) for layer in views]
        with emu.count() as c_store:
            if case.use_layerwise:
                for _ in engine.store_layer(tokens[:stored], kvcaches=kv, slot_mapping=slots[:stored], sync=True):
                    pass
            else:
                engine.store(tokens[:stored], kvcaches=kv, slot_mapping=slots[:stored])
        hit = 0
        for _ in range(300):  # some releases put to the backend asynchronously
            hit = engine.lookup(tokens[:stored] if not case.prefix_hit else tokens)
            if hit >= (stored // case.chunk_size) * case.chunk_size and hit:
                break
            time.sleep(0.01)
        for layer in views:
            for v in layer:
                v.zero_()
        if case.corrupt:
            _corrupt_backend(engine)
        with emu.count() as c_retrieve:
            if case.use_layerwise:
                ret = None
                for ret in engine.retrieve_layer(tokens, kvcaches=kv, slot_mapping=slots, sync=True):
                    pass
            else:
                ret = engine.retrieve(tokens, kvcaches=kv, slot_mapping=slots)
        retrieved = int(ret.sum())
        got = [tuple(v.cpu() for v in layer) for layer in views]
        restored_slots = slots_host[:retrieved]
        mask = torch.zeros(case.num_blocks * case.block_size, dtype=torch.bool)
        mask[restored_slots] = True
        bit_exact = retrieved > 0 and all(torch.equal(g[mask], r[mask]) for gl, rl in zip(got, reference)
                                          for g, r in zip(gl, rl))
        untouched = all(bool((g[~mask] == 0).all()) for gl in got for g in gl)
        result.update(stored=stored, save_unfull_chunk=getattr(config, "save_unfull_chunk", None), hit=hit, retrieved=retrieved, bit_exact=bit_exact, untouched_elsewhere=untouched,
                      store_counts=c_store.as_dict(), retrieve_counts=c_retrieve.as_dict(),
                      layout_seen=getattr(connector, "hpu_shim_layout", None))
    finally:
        _destroy(name)
    return result


def _corrupt_backend(engine: Any) -> None:
    """Negative control: overwrite every stored memory object in LMCache's local CPU backend."""
    import torch

    seen = 0
    for obj in _stored_objects(engine):
        obj.tensor.copy_(torch.full_like(obj.tensor, 7))
        seen += 1
    if not seen:
        raise RuntimeError("negative control found no stored memory objects to corrupt")


def _stored_objects(engine: Any):
    manager = getattr(engine, "storage_manager", None)
    backends = getattr(manager, "storage_backends", None) or getattr(manager, "backends", None) or {}
    for backend in (backends.values() if isinstance(backends, dict) else backends):
        hot = getattr(backend, "hot_cache", None)
        if hot:
            yield from list(hot.values())


def _destroy(name: str) -> None:
    from lmcache.v1.cache_engine import LMCacheEngineBuilder

    loggers = getattr(LMCacheEngineBuilder, "_stat_loggers", {})
    logger = loggers.get(name) if isinstance(loggers, dict) else None
    if logger is not None and hasattr(logger, "shutdown"):
        # 0.3.x: shutdown() joins a thread sleeping 10 s; stopping its loop flag is enough here.
        logger.shutdown = lambda: setattr(logger, "is_running", False)
    LMCacheEngineBuilder.destroy(name)


def main(argv: list[str] | None = None) -> int:
    from . import results

    argv = sys.argv[1:] if argv is None else argv
    cases = [Case(**c) for c in json.loads(argv[0] if argv else "[{}]")]
    failures = 0
    for case in cases:
        try:
            result = run_case(case)
        except BaseException as exc:  # report, don't hide: the test asserts on it
            result = {"case": dataclasses.asdict(case), "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
            failures += 1
        results.emit(result)
    import hpu_shim

    hpu_shim.flush_report()  # os._exit skips atexit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LMCache leaves non-daemon threads behind after errors


if __name__ == "__main__":
    main()
