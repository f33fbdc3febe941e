"""Store -> lookup -> retrieve through a real LMCache release's own engine, on the emulated HPU.

Used by the tests, ``python -m hpu_shim demo`` and ``make matrix``. Run it in a fresh interpreter
configured like a Gaudi container (``PYTHONPATH=<sitecustomize>:<lmcache release>``,
``HPU_SHIM_FAKE_HPU=1``, and ``HPU_SHIM=1`` or not, to show the shim is what makes it work):

    python -m hpu_shim.testing.lmcache_roundtrip '[{"layout": "kv_tuple", "dtype": "bfloat16"}]'

Each ``roundtrip`` case builds the engine with ``LMCacheEngineBuilder`` and the GPU connector
LMCache itself creates for vLLM (``CreateGPUConnector`` where the release has it, else the
adapter's ``VLLMPagedMemGPUConnectorV2(...)`` call), fills a paged KV cache on the backend device
with random data, stores, looks up, wipes, retrieves, and checks ``torch.equal`` on the restored
slots plus zeros everywhere else. Other kinds: ``malformed`` (a bad slot mapping handed to store or
retrieve must raise before anything is written), ``cross`` (LMCache >= 0.4.3: a chunk stored by
LMCache's own HPU connector is retrieved by the shim's and vice versa, and both store the same
bytes) and ``properties`` (the seeded property suite, ``lmcache_properties``). One result per case
goes through ``hpu_shim.testing.results`` (a file, not stdout).

The parent side (``child_env``, ``run_cases``, ``SharedRuns``) starts one interpreter per
(release, mode, backend) and runs every case registered for it there: LMCache imports are slow.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

from ..compat.releases import create_engine

__all__ = ["REPO", "SHARED", "Case", "RunKey", "SharedRuns", "child_env", "main", "run_case", "run_cases"]

#: The checkout this package lives in (the tests run releases from ``<REPO>/.envs``).
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Case:
    kind: str = "roundtrip"  # roundtrip | malformed | cross | properties
    layout: str = "kv_tuple"  # kv_tuple | flat | 5d | stacked | mla | vllm_cpu
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
    # malformed: which call gets the bad slot mapping, and how it is bad
    bad_call: str = "retrieve"  # store | retrieve
    bad_slots: str = "short"  # short (fewer slots than tokens) | negative | out_of_range | float
    # cross: which connector stores and which retrieves ("shim" = hpu_shim's batched, "lmcache" = LMCache's own)
    store_with: str = "lmcache"
    retrieve_with: str = "shim"
    # properties: examples to run (hypothesis, derandomized) and the share that goes through the engine
    examples: int = 500
    engine_share: float = 0.1
    max_local_cpu_gb: float = 0.5
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
    kwargs = {"model_name": "hpu-shim-roundtrip", "world_size": 1, "local_world_size": 1, "worker_id": 0,
              "local_worker_id": 0, "kv_dtype": dtype, "kv_shape": shape, "use_mla": mla,
              "chunk_size": case.chunk_size}
    return LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})


def _config(case: Case) -> Any:
    from lmcache.v1.config import LMCacheEngineConfig

    kwargs: dict[str, Any] = {"chunk_size": case.chunk_size, "local_cpu": True,
                              "max_local_cpu_size": case.max_local_cpu_gb}
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


class VLLMCPUView:
    """Per-token K/V rows of one vLLM-CPU layer ``[NB, H, BS, 2*D]``, written from cpu_attn.py's own
    reading (``[NB, H, 2*BS, D]`` split on dim 2) -- independent of the shim's connector code."""

    def __init__(self, cache: Any, heads: int, head_dim: int):
        nb, _, bs, _ = cache.shape
        self.cache, self.bs = cache, bs
        self.rows = cache.view(nb, heads, 2 * bs, head_dim)

    def tokens(self, kv: int) -> Any:
        """Host ``[NB*BS, H*D]`` of K (kv=0) or V (kv=1), slot-major."""
        host = self.rows.cpu()
        nb, h, _, d = host.shape
        half = host[:, :, kv * self.bs:(kv + 1) * self.bs, :]  # [NB, H, BS, D]
        return half.permute(0, 2, 1, 3).reshape(nb * self.bs, h * d)


def _paged_kv(case: Case, dtype: Any, device: Any, gen: Any) -> tuple[list, Any]:
    """The KV cache in the requested layout, and a reader of per-layer host ``[slots, hidden]`` copies."""
    import torch

    nb, bs, h, d = case.num_blocks, case.block_size, case.heads, case.head_dim

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    if case.layout == "5d":
        kv = [rnd(2, nb, bs, h, d) for _ in range(case.num_layers)]
        views = [(t[0].view(nb * bs, -1), t[1].view(nb * bs, -1)) for t in kv]
    elif case.layout == "stacked":  # one [L, 2, NB, BS, H, D] tensor (LMCache's unit tests hand this over)
        kv = rnd(case.num_layers, 2, nb, bs, h, d)
        views = [(kv[i, 0].view(nb * bs, -1), kv[i, 1].view(nb * bs, -1)) for i in range(case.num_layers)]
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
    elif case.layout == "vllm_cpu":  # vLLM's CPU build: [NB, H, BS, 2*D] per layer
        kv = [rnd(nb, h, bs, 2 * d) for _ in range(case.num_layers)]
        return kv, _VLLMCPUReader([VLLMCPUView(t, h, d) for t in kv])
    else:
        raise ValueError(f"unknown layout {case.layout!r}: kv_tuple, flat, 5d, stacked, mla or vllm_cpu")
    return kv, _ViewReader(views)


class _ViewReader:
    """Host copies and zeroing of per-layer ``[slots, hidden]`` views (the check side of a round trip)."""

    def __init__(self, views: list):
        self.views = views

    def host(self) -> list:
        return [tuple(v.cpu() for v in layer) for layer in self.views]

    def zero(self) -> None:
        for layer in self.views:
            for v in layer:
                v.zero_()


class _VLLMCPUReader:
    def __init__(self, layers: list):
        self.layers = layers

    def host(self) -> list:
        return [(layer.tokens(0), layer.tokens(1)) for layer in self.layers]

    def zero(self) -> None:
        for layer in self.layers:
            layer.cache.zero_()


def _slots(case: Case, gen: Any) -> Any:
    import torch

    total = case.num_blocks * case.block_size
    if case.slots == "random":
        return torch.randperm(total, generator=gen)[: case.tokens]
    blocks = torch.randperm(case.num_blocks, generator=gen)
    runs = (blocks[:, None] * case.block_size + torch.arange(case.block_size)).flatten()
    return runs[: case.tokens]


#: The counters a per-call record keeps (what P1 and the host-bytes checks read).
CALL_COUNTERS = ("mark_step_calls", "synchronize_calls", "stream_synchronize_calls", "event_synchronize_calls",
                 "blocking_d2h_copies", "d2h_bytes", "h2d_bytes", "bounce_buffer_bytes", "host_memcpy_bytes",
                 "cpu_fallbacks", "float64_downcasts", "int64_host_casts")


def _count_calls(connector: Any, calls: list) -> None:
    """Record the emulator's counters around each batched call LMCache's engine makes on ``connector``.

    Instrumentation only (an instance attribute over the bound method): the engine's own work
    around the call (its broadcasts, stream syncs) stays out of the per-call figures.
    """
    from hpu_shim import testing as emu

    for name in ("batched_from_gpu", "batched_to_gpu"):
        original = getattr(connector, name)

        def counted(memory_objs: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            objs = list(memory_objs)
            tensors = [getattr(o, "tensor", None) for o in objs]
            with emu.count() as c:
                out = _original(objs, *args, **kwargs)
            counts = c.as_dict()
            calls.append({"call": _name, "chunks": len(objs),
                          "tokens": sum(int(t.shape[2]) for t in tensors if t is not None),
                          "device_objs": any(t is not None and t.device.type != "cpu" for t in tensors),
                          **{k: counts.get(k, 0) for k in CALL_COUNTERS}})
            return out

        setattr(connector, name, counted)


def _device() -> Any:
    import torch

    return torch.device("hpu:0") if os.environ.get("HPU_SHIM_BACKEND", "hpu") != "cpu" else torch.device("cpu")


def _engine(case: Case, connector: Any, config: Any, metadata: Any) -> tuple[Any, str]:
    name = f"roundtrip-{os.getpid()}-{id(case)}-{time.monotonic_ns()}"
    engine = create_engine(name, config, metadata, connector)
    return engine, name


def _wait_hit(engine: Any, tokens: Any, want: int) -> int:
    """``engine.lookup`` once it reports ``want`` tokens (some releases put to the backend asynchronously)."""
    deadline = time.monotonic() + 5
    while True:
        hit = engine.lookup(tokens)
        if hit >= want or time.monotonic() > deadline:
            return hit
        time.sleep(0.01)


def _bad_slot_mapping(case: Case, slots: Any, total: int) -> Any:
    """The malformed slot mapping a ``malformed`` case hands over (see ``Case.bad_slots``)."""
    bad = slots.clone()
    if case.bad_slots == "short":
        return bad[: case.tokens * 3 // 5]
    if case.bad_slots == "negative":
        bad[case.tokens // 2] = -1
    elif case.bad_slots == "out_of_range":
        bad[case.tokens // 2] = total
    elif case.bad_slots == "float":
        return bad.float()
    else:
        raise ValueError(f"unknown bad_slots {case.bad_slots!r}: short, negative, out_of_range or float")
    return bad


#: Case kinds run by another module, as "module:function" (that module builds on this one's helpers).
EXTERNAL_KINDS = {"properties": "hpu_shim.testing.lmcache_properties:run_properties"}


def run_case(case: Case) -> dict:
    import importlib

    import torch

    from hpu_shim import testing as emu

    if case.kind in EXTERNAL_KINDS:
        module, func = EXTERNAL_KINDS[case.kind].split(":")
        return getattr(importlib.import_module(module), func)(case)
    if case.kind == "cross":
        return _run_cross(case)
    dtype = getattr(torch, case.dtype)
    device = _device()
    gen = torch.Generator().manual_seed(case.seed)
    config, metadata = _config(case), _metadata(case, dtype)
    connector = _connector(config, metadata, case, dtype, device)
    calls: list = []
    _count_calls(connector, calls)
    engine, name = _engine(case, connector, config, metadata)
    result: dict[str, Any] = {"case": dataclasses.asdict(case), "connector_calls": calls,
                              "connector": f"{type(connector).__module__}.{type(connector).__name__}",
                              "substituted": getattr(type(connector), "__hpu_shim_substitute__", None),
                              "mode": "lazy" if emu.is_lazy() else "eager", "profile": _profile()}
    try:
        kv, reader = _paged_kv(case, dtype, device, gen)
        slots_host = _slots(case, gen)
        total = case.num_blocks * case.block_size
        slots = slots_host.to(device)
        tokens = torch.randint(0, 32000, (case.tokens,), generator=gen)
        stored = case.prefix_hit or case.tokens
        reference = reader.host()
        store_slots, retrieve_slots = slots[:stored], slots
        if case.kind == "malformed":
            bad = _bad_slot_mapping(case, slots_host, total).to(device)
            if case.bad_call == "store":
                store_slots = bad[:stored] if case.bad_slots != "short" else bad
            else:
                retrieve_slots = bad
        with emu.count() as c_store:
            try:
                if case.use_layerwise:
                    for _ in engine.store_layer(tokens[:stored], kvcaches=kv, slot_mapping=store_slots, sync=True):
                        pass
                else:
                    engine.store(tokens[:stored], kvcaches=kv, slot_mapping=store_slots)
            except Exception as exc:
                if case.kind != "malformed" or case.bad_call != "store":
                    raise
                result.update(error_in="store", error=f"{type(exc).__name__}: {exc}",
                              hit=engine.lookup(tokens[:stored]),
                              kv_unchanged=all(torch.equal(g, r) for gl, rl in zip(reader.host(), reference)
                                               for g, r in zip(gl, rl)))
                return result
        want = (stored // case.chunk_size) * case.chunk_size
        hit = _wait_hit(engine, tokens[:stored] if not case.prefix_hit else tokens, want)
        reader.zero()
        if case.corrupt:
            _corrupt_backend(engine)
        with emu.count() as c_retrieve:
            try:
                if case.use_layerwise:
                    ret = None
                    for ret in engine.retrieve_layer(tokens, kvcaches=kv, slot_mapping=retrieve_slots, sync=True):
                        pass
                else:
                    ret = engine.retrieve(tokens, kvcaches=kv, slot_mapping=retrieve_slots)
            except Exception as exc:
                if case.kind != "malformed":
                    raise
                # A malformed input must fail before any write: report the error and what was written.
                written = any(bool((v != 0).any()) for layer in reader.host() for v in layer)
                result.update(stored=stored, hit=hit, error_in="retrieve", error=f"{type(exc).__name__}: {exc}",
                              written_after_error=written)
                return result
        retrieved = int(ret.sum())
        got = reader.host()
        restored_slots = slots_host[:retrieved]
        mask = torch.zeros(total, dtype=torch.bool)
        mask[restored_slots] = True
        bit_exact = retrieved > 0 and all(torch.equal(g[mask], r[mask]) for gl, rl in zip(got, reference)
                                          for g, r in zip(gl, rl))
        untouched = all(bool((g[~mask] == 0).all()) for gl in got for g in gl)
        result.update(stored=stored, save_unfull_chunk=getattr(config, "save_unfull_chunk", None), hit=hit,
                      retrieved=retrieved, bit_exact=bit_exact, untouched_elsewhere=untouched,
                      store_counts=c_store.as_dict(), retrieve_counts=c_retrieve.as_dict(),
                      layout_seen=getattr(connector, "hpu_shim_layout", None), redirects=_redirects())
    finally:
        _destroy(name)
    return result


def _connector_pair(case: Case, config: Any, metadata: Any, dtype: Any, device: Any) -> dict:
    """{"shim": the connector LMCache builds in scope, "lmcache": LMCache's own class as
    ``HPU_SHIM_NATIVE_CONNECTOR=1`` runs it (its transfers, the shim's layout fixes only)}."""
    from ..compat.connector import make_flat_aware_connector

    shim = _connector(config, metadata, case, dtype, device)
    name = type(shim).__name__
    own = next((c for c in type(shim).__mro__[1:] if c.__name__ == name and "__hpu_shim_substitute__" not in vars(c)),
               None)
    if own is None:
        raise RuntimeError(f"{type(shim).__qualname__} is not a shim subclass of LMCache's connector: the cross test "
                           f"needs LMCache >= 0.4.3 with the shim's batched connector (HPU_SHIM_NATIVE_CONNECTOR=0)")
    return {"shim": shim, "lmcache": make_flat_aware_connector(own).from_metadata(metadata, False, device)}


def _profile() -> str | None:
    """The compat profile name ``status()`` reports (None without the shim)."""
    import hpu_shim

    return hpu_shim.status().get("compat")


def _redirects() -> list[str]:
    """``api -> target`` of every call site the shim redirected in this process so far (its audit)."""
    import hpu_shim

    return sorted({f"{r.api} -> {r.target}" for r in hpu_shim.report()})


def _run_cross(case: Case) -> dict:
    """LMCache >= 0.4.3: store with one connector, retrieve with the other, through one engine's storage."""
    import torch

    from hpu_shim import testing as emu

    dtype = getattr(torch, case.dtype)
    device = _device()
    gen = torch.Generator().manual_seed(case.seed)
    config, metadata = _config(case), _metadata(case, dtype)
    pair = _connector_pair(case, config, metadata, dtype, device)
    engine, name = _engine(case, pair[case.store_with], config, metadata)
    result: dict[str, Any] = {"case": dataclasses.asdict(case), "mode": "lazy" if emu.is_lazy() else "eager",
                              "classes": {k: f"{type(v).__module__}.{type(v).__qualname__} "
                                             f"({getattr(type(v), '__hpu_shim_substitute__', None)})"
                                          for k, v in pair.items()}}
    try:
        kv, reader = _paged_kv(case, dtype, device, gen)
        slots_host = _slots(case, gen)
        slots = slots_host.to(device)
        tokens = torch.randint(0, 32000, (case.tokens,), generator=gen)
        reference = reader.host()
        with emu.count() as c_store:
            engine.store(tokens, kvcaches=kv, slot_mapping=slots)
        stored_objs = list(_stored_objects(engine))
        stored_bytes = [o.tensor.clone() for o in stored_objs]
        fmt = stored_objs[0].metadata.fmt if stored_objs else None
        # The other connector stores the same tokens into fresh objects: the bytes must be identical.
        other = pair["shim" if case.store_with == "lmcache" else "lmcache"]
        same_bytes = True
        starts = list(range(0, len(stored_bytes) * case.chunk_size, case.chunk_size))
        for obj_bytes, start in zip(stored_bytes, starts):
            n = obj_bytes.shape[2]
            fresh = engine.storage_manager.allocate(obj_bytes.shape, obj_bytes.dtype, fmt, busy_loop=False)
            other.batched_from_gpu([fresh], [start], [start + n], kvcaches=kv, slot_mapping=slots)
            same_bytes = same_bytes and torch.equal(fresh.tensor, obj_bytes)
            fresh.ref_count_down()
        hit = _wait_hit(engine, tokens, (case.tokens // case.chunk_size) * case.chunk_size)
        reader.zero()
        engine.gpu_connector = pair[case.retrieve_with]
        with emu.count() as c_retrieve:
            ret = engine.retrieve(tokens, kvcaches=kv, slot_mapping=slots)
        retrieved = int(ret.sum())
        got = reader.host()
        mask = torch.zeros(case.num_blocks * case.block_size, dtype=torch.bool)
        mask[slots_host[:retrieved]] = True
        result.update(hit=hit, retrieved=retrieved, chunks=len(stored_bytes), same_bytes=same_bytes,
                      store_counts=c_store.as_dict(), retrieve_counts=c_retrieve.as_dict(),
                      bit_exact=retrieved > 0 and all(torch.equal(g[mask], r[mask]) for gl, rl in zip(got, reference)
                                                      for g, r in zip(gl, rl)),
                      untouched_elsewhere=all(bool((g[~mask] == 0).all()) for gl in got for g in gl))
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
    import gc

    import lmcache.v1.cache_engine  # noqa: F401  (the slow imports, before the cases)

    for case in cases:
        gc.freeze()  # LMCache's engine calls gc.collect() on creation: leave out what exists already
        try:
            result = run_case(case)
        except BaseException as exc:  # noqa: BLE001  (report, don't hide: the test asserts on it)
            result = {"case": dataclasses.asdict(case), "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
        results.emit(result)
    import hpu_shim

    hpu_shim.flush_report()  # os._exit skips atexit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LMCache leaves non-daemon threads behind after errors


# ---- parent side ---------------------------------------------------------------------------------------
def release_dir(version: str, envs: str | os.PathLike | None = None) -> Path:
    """``<envs>/lmcache-<version>`` (``HPU_SHIM_ENVS`` or ``<REPO>/.envs``); a clear error when missing."""
    path = Path(envs or os.environ.get("HPU_SHIM_ENVS") or REPO / ".envs") / f"lmcache-{version}"
    if not (path / "lmcache" / "__init__.py").is_file():
        raise FileNotFoundError(f"LMCache {version} is not installed in {path}: run `make lmcache-envs` "
                                f"(or `make test`)")
    return path


def child_env(version: str, *, shim: bool = True, mode: str = "lazy", backend: str = "hpu",
              report: str | os.PathLike | None = None, extra: dict | None = None) -> dict:
    """The environment of a Gaudi-container-like child running ``version`` (``mode``: lazy | eager)."""
    try:
        from ..runtime.environment import clean
    except ImportError:  # before the runtime's one sanitiser existed
        clean = None
    env = clean(pythonpath=False) if clean is not None else _clean(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "sitecustomize"), str(release_dir(version)), str(REPO)]),
               HPU_SHIM="1" if shim else "0", HPU_SHIM_BACKEND=backend,
               PT_HPU_LAZY_MODE={"lazy": "1", "eager": "0"}[mode], LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0")
    if backend == "hpu":  # the emulated HPU; the cpu backend runs where there is none (vLLM's CPU build)
        env["HPU_SHIM_FAKE_HPU"] = "1"
    if report is not None:
        env["HPU_SHIM_REPORT"] = str(report)
    env.update(extra or {})
    return env


def _clean(environ: Any) -> dict:
    return {k: v for k, v in environ.items() if not k.startswith("HPU_SHIM") and k != "PYTHONPATH"}


def run_cases(version: str, cases: list[dict], *, timeout: float = 1500, **env_kwargs: Any) -> list[dict]:
    """Run ``cases`` in one fresh child for ``version``; one result each, or an AssertionError saying why not."""
    from .results import run_child

    child = run_child([sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps(cases)],
                      env=child_env(version, **env_kwargs), timeout=timeout)
    if len(child.results) != len(cases):
        raise AssertionError(f"LMCache {version} child returned {len(child.results)} of {len(cases)} results\n"
                             + child.diagnostics())
    return child.results


class RunKey(NamedTuple):
    """One child interpreter: a release, the HPU execution mode, the backend, the shim on or off, and
    ``HPU_SHIM_NATIVE_CONNECTOR``."""

    version: str
    mode: str = "lazy"  # lazy | eager
    backend: str = "hpu"  # hpu | cpu
    shim: bool = True
    native: bool = False


class SharedRuns:
    """Cases registered by several test modules at collection, run in one child per ``RunKey``.

    ``register(key, name, case)`` at import time; ``get(key)`` runs every case registered under
    ``key`` on first use and returns ``{name: result}`` (a failed child fails every caller with
    the same diagnostics, without running again).
    """

    def __init__(self) -> None:
        self._cases: dict[RunKey, dict[str, dict]] = {}
        self._results: dict[RunKey, Any] = {}

    def register(self, key: RunKey, name: str, case: dict) -> str:
        cases = self._cases.setdefault(key, {})
        if name in cases and cases[name] != case:
            raise ValueError(f"{key}: case {name!r} registered twice with different contents")
        cases[name] = case
        return name

    def get(self, key: RunKey) -> dict[str, dict]:
        if key not in self._results:
            cases = self._cases.get(key)
            if not cases:
                raise KeyError(f"no cases registered for {key}")
            extra = {"HPU_SHIM_NATIVE_CONNECTOR": "1" if key.native else "0"}
            try:
                results = run_cases(key.version, list(cases.values()), mode=key.mode, backend=key.backend,
                                    shim=key.shim, extra=extra)
                self._results[key] = dict(zip(cases, results))
            except BaseException as exc:  # noqa: BLE001  (remembered: every test on this key reports it)
                self._results[key] = exc
        outcome = self._results[key]
        if isinstance(outcome, BaseException):
            raise AssertionError(f"the LMCache child for {key} failed: {outcome}") from outcome  # noqa: TRY004
        return outcome


#: The one registry the test modules share (one pytest process, one child per key).
SHARED = SharedRuns()


if __name__ == "__main__":
    main()
