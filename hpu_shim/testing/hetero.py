"""Prefill here, decode there: KV through shared storage between two processes, each a real LMCache.

    python -m hpu_shim.testing.hetero '[{"role": "produce", "url": "lm://127.0.0.1:PORT", ...}, ...]'

``produce`` runs like the prefill node: the cpu backend (``HPU_SHIM_BACKEND=cpu``) and a standard CUDA
paged layout -- LMCache's per-layer ``[2, NB, BS, H, D]`` (``layout="standard"``) or vLLM-CPU's
``[NB, H, BS, 2*D]`` (``layout="vllm_cpu"``) -- with vLLM's block size 16. It stores ``tokens`` tokens
through LMCache's own engine and GPU connector into ``url`` (``fs://``, ``lm://``, ``redis://``), waits
until the remote answers a lookup for every chunk, and writes the reference (token ids and the KV it
stored, ``[L, 2, T, hidden]``) to ``reference``.

``consume`` runs like the decode node: the emulated HPU with vllm-gaudi's layout (``TensorTuple((K, V))`` of
``[NB, 128, H, D]``, block size 128). It looks up, optionally injects a fault between lookup and
retrieve (``fault``: ``kill`` or ``freeze`` the server process ``server_pid``), retrieves into a cache
pre-filled with noise, and checks every restored token with ``torch.equal`` against the reference and
every other slot against the noise it started with (nothing written elsewhere).

One interpreter runs a list of specs (LMCache's import is most of the cost) and emits one result per
spec through ``hpu_shim.testing.results`` (a file, never shared stdout), with the WARNING records the
``hpu_shim`` logger produced and how long lookup, retrieve and close took. A consumer that does not
finish within ``deadline`` is reported as hung, with its stack. ``without`` undoes named fix-ups for one
spec (``WITHOUT``): the negative control that shows the defect the fix-up prevents.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from ..compat.releases import create_engine

__all__ = ["Spec", "produce", "consume", "main"]


@dataclasses.dataclass
class Spec:
    role: str = "produce"  # produce | consume
    url: str = ""
    reference: str = ""  # file: written by produce, read by consume
    layout: str = "standard"  # standard | vllm_cpu | kv_tuple | flat
    block_size: int = 16
    num_layers: int = 4
    heads: int = 2
    head_dim: int = 32
    dtype: str = "bfloat16"
    chunk_size: int = 256
    tokens: int = 1024
    model_name: str = "hetero-model"
    world_size: int = 1
    save_unfull_chunk: bool = False
    local_cpu: bool = False  # off: every hit must come from the shared storage
    seed: int = 0
    fault: str | None = None  # consume: kill | freeze the storage server (server_pid) ...
    fault_at: str = "retrieve"  # ... just before the retrieve (after the lookup) or before the lookup
    server_pid: int | None = None
    thaw: bool = True  # consume, fault=freeze: continue the server after the retrieve (for later specs)
    without: list = dataclasses.field(default_factory=list)  # negative control: fix-ups undone (WITHOUT)
    flush_timeout: float = 120.0  # produce: how long the remote may take to show every chunk
    close_timeout: float = 60.0  # how long closing the engine may take before it is reported as hung
    deadline: float = 300.0  # consume: lookup + retrieve longer than this is reported as hung
    extra_config: dict = dataclasses.field(default_factory=dict)


#: Negative controls: a spec's ``without`` names fix-ups to undo for that spec only, so the same run
#: shows the defect each one prevents. name -> (module, class, attributes) patched by hpu_shim.compat.
WITHOUT = {
    "keys": ("lmcache.v1.token_database", "TokenDatabase", ("__init__",)),
    "retrieve": ("lmcache.v1.cache_engine", "LMCacheEngine", ("_process_tokens_internal",)),
    "guards": ("lmcache.v1.storage_backend.storage_manager", "StorageManager", ("batched_get",)),
    "remote": ("lmcache.v1.storage_backend.remote_backend", "RemoteBackend",
               ("contains", "batched_contains", "get_blocking", "batched_get_blocking", "close")),
    "lm_socket": ("lmcache.v1.storage_backend.connector.lm_connector", None, ("socket",)),
    "close": ("lmcache.v1.storage_backend.job_executor.pq_executor", "AsyncPQExecutor", ("shutdown",)),
    "fs_url": ("lmcache.v1.storage_backend.connector.fs_adapter", None, ("parse_remote_url",)),
}


class _Without:
    """Temporarily put back LMCache's original methods (``__wrapped__``) for the named fix-ups."""

    def __init__(self, names: list):
        unknown = [n for n in names if n not in WITHOUT]
        if unknown:
            raise ValueError(f"unknown fix-up(s) {unknown} in 'without'; known: {', '.join(WITHOUT)}")
        self.names, self.saved = list(names), []

    def __enter__(self) -> "_Without":
        import importlib

        for name in self.names:
            module, cls_name, attrs = WITHOUT[name]
            owner = importlib.import_module(module)
            cls = getattr(owner, cls_name) if cls_name else owner
            for attr in attrs:
                if attr not in vars(cls):  # e.g. batched_contains before LMCache 0.4
                    continue
                patched = vars(cls)[attr]
                original = getattr(patched, "__wrapped__", None)
                if original is None:
                    raise RuntimeError(f"{cls_name or module}.{attr} is not patched by hpu_shim: nothing to undo "
                                       f"for {name!r}")
                self.saved.append((cls, attr, patched))
                setattr(cls, attr, original)
        return self

    def __exit__(self, *exc: Any) -> None:
        for cls, attr, patched in reversed(self.saved):
            setattr(cls, attr, patched)


class _Warnings(logging.Handler):
    """Collects WARNING+ records of the hpu_shim logger (the guards' and remote fix-ups' verdicts)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _metadata(spec: Spec, dtype: Any) -> Any:
    shape = (spec.num_layers, 2, spec.chunk_size, spec.heads, spec.head_dim)
    try:
        from lmcache.v1.metadata import LMCacheMetadata
    except ImportError:
        from lmcache.config import LMCacheEngineMetadata

        return LMCacheEngineMetadata(spec.model_name, spec.world_size, 0, "vllm", dtype, shape, False)
    params = inspect.signature(LMCacheMetadata).parameters
    kwargs = dict(model_name=spec.model_name, world_size=spec.world_size, local_world_size=spec.world_size,
                  worker_id=0, local_worker_id=0, kv_dtype=dtype, kv_shape=shape, use_mla=False,
                  chunk_size=spec.chunk_size)
    return LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})


def _config(spec: Spec) -> Any:
    from lmcache.v1.config import LMCacheEngineConfig

    kwargs: dict[str, Any] = dict(chunk_size=spec.chunk_size, local_cpu=spec.local_cpu, max_local_cpu_size=0.5,
                                  remote_url=spec.url, remote_serde="naive",
                                  save_unfull_chunk=spec.save_unfull_chunk)
    if spec.extra_config:
        kwargs["extra_config"] = dict(spec.extra_config)
    return LMCacheEngineConfig.from_defaults(**kwargs)


def _connector(config: Any, metadata: Any, spec: Spec, dtype: Any, device: Any) -> Any:
    """The connector LMCache's vLLM integration creates (``CreateGPUConnector`` or 0.3.x's adapter call)."""
    import lmcache.v1.gpu_connector as gc

    create = getattr(gc, "CreateGPUConnector", None)
    if create is not None:
        try:
            from lmcache.utils import EngineType
        except ImportError:
            return create(config, metadata, "vllm")
        return create(config, metadata, EngineType.VLLM)
    return gc.VLLMPagedMemGPUConnectorV2(spec.heads * spec.head_dim, spec.num_layers, use_gpu=True,
                                         chunk_size=spec.chunk_size, dtype=dtype, device=device)


def _slots(num_blocks: int, block_size: int, tokens: int, gen: Any) -> Any:
    """vLLM-style slot mapping: whole blocks in a shuffled order, tokens in order inside each block."""
    import torch

    blocks = torch.randperm(num_blocks, generator=gen)
    return (blocks[:, None] * block_size + torch.arange(block_size)).flatten()[:tokens]


class _Paged:
    """A paged KV cache in one layout, with per-token K/V access by slot (for filling and checking)."""

    def __init__(self, spec: Spec, dtype: Any, device: Any, gen: Any):
        import torch

        self.spec = spec
        self.num_blocks = -(-spec.tokens // spec.block_size) + 2
        nb, bs, h, d = self.num_blocks, spec.block_size, spec.heads, spec.head_dim
        noise = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).to(device)  # noqa: E731
        if spec.layout == "standard":  # per layer [2, NB, BS, H, D] (LMCache's 5-D, vLLM flash-attn on CUDA)
            self.kv = [noise(2, nb, bs, h, d) for _ in range(spec.num_layers)]
            self._kv = [(t[0].view(nb * bs, h * d), t[1].view(nb * bs, h * d)) for t in self.kv]
        elif spec.layout == "vllm_cpu":  # per layer [NB, H, BS, 2*D] (vLLM's CPU build)
            from ..compat.cpu_connector import VLLMCPULayer

            self.kv = [noise(nb, h, bs, 2 * d) for _ in range(spec.num_layers)]
            self._cpu = [VLLMCPULayer(t, h, d) for t in self.kv]
        elif spec.layout == "kv_tuple":  # vllm-gaudi >= 0.11.2: TensorTuple((K, V)) of [NB, BS, H, D]
            from ._vllm_gaudi import TensorTuple

            self.kv = [TensorTuple((noise(nb, bs, h, d), noise(nb, bs, h, d))) for _ in range(spec.num_layers)]
            self._kv = [(k.view(nb * bs, h * d), v.view(nb * bs, h * d)) for k, v in self.kv]
        elif spec.layout == "flat":  # vllm-gaudi < 0.11.2: (K, V, k_scales, v_scales) of [NB*BS, H, D]
            self.kv = [(noise(nb * bs, h, d), noise(nb * bs, h, d), None, None) for _ in range(spec.num_layers)]
            self._kv = [(k.view(nb * bs, h * d), v.view(nb * bs, h * d)) for k, v, *_ in self.kv]
        else:
            raise ValueError(f"unknown layout {spec.layout!r}: standard, vllm_cpu, kv_tuple or flat")

    def write(self, slots: Any, ref: Any) -> None:
        """Put ``ref[L, 2, T, hidden]`` at ``slots`` (the producer's KV, as its attention would have)."""
        for li in range(self.spec.num_layers):
            if self.spec.layout == "vllm_cpu":
                self._cpu[li].scatter(slots.to(self.kv[li].device), ref[li, 0].to(self.kv[li].device),
                                      ref[li, 1].to(self.kv[li].device))
            else:
                for kv in (0, 1):
                    self._kv[li][kv][slots.to(self._kv[li][kv].device)] = ref[li, kv].to(self._kv[li][kv].device)

    def snapshot(self) -> Any:
        """All slots on the host as ``[L, 2, NB*BS, hidden]``."""
        import torch

        out = []
        for li in range(self.spec.num_layers):
            if self.spec.layout == "vllm_cpu":
                allslots = torch.arange(self.num_blocks * self.spec.block_size)
                k, v = self._cpu[li].gather(allslots)
                out.append(torch.stack([k.cpu(), v.cpu()]))
            else:
                out.append(torch.stack([self._kv[li][0].cpu(), self._kv[li][1].cpu()]))
        return torch.stack(out)


_ENGINES = itertools.count()


def _wait_for_server(url: str, timeout: float) -> None:
    """lm:// and redis:// servers may still be starting (they are launched with the producer)."""
    from urllib.parse import urlparse

    from .hetero_servers import _accepts_at, wait_until

    parsed = urlparse(url)
    if parsed.scheme in ("lm", "redis") and parsed.hostname and parsed.port:
        wait_until(lambda: _accepts_at(parsed.hostname, parsed.port), timeout, f"{url} to accept connections")


def _engine(spec: Spec, dtype: Any, device: Any) -> tuple[Any, Any, str]:
    if spec.role == "produce":
        _wait_for_server(spec.url, spec.flush_timeout)

    config, metadata = _config(spec), _metadata(spec, dtype)
    connector = _connector(config, metadata, spec, dtype, device)
    name = f"hetero-{spec.role}-{os.getpid()}-{next(_ENGINES)}"
    engine = create_engine(name, config, metadata, connector)
    return engine, connector, name


def _close(name: str, timeout: float) -> dict:
    """Close the engine (and its remote connection) on a daemon thread; report if it does not return."""
    from .lmcache_roundtrip import _destroy

    box: dict = {}

    def run() -> None:
        try:
            _destroy(name)
        except BaseException as exc:  # reported, not raised: the measurement is whether close returns
            box["error"] = f"{type(exc).__name__}: {exc}"
        box["done"] = True

    start = time.perf_counter()
    thread = threading.Thread(target=run, name="hetero-close", daemon=True)
    thread.start()
    thread.join(timeout)
    out = {"close_returned": bool(box.get("done")), "close_s": time.perf_counter() - start,
           "close_error": box.get("error")}
    if not box.get("done"):  # where it hangs, for the report
        frame = sys._current_frames().get(thread.ident)
        out["close_stack"] = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else None
    return out


def _lookup(engine: Any, tokens: Any) -> int:
    return int(engine.lookup(tokens))


def produce(spec: Spec) -> dict:
    import torch

    dtype = getattr(torch, spec.dtype)
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(spec.seed)
    hidden = spec.heads * spec.head_dim
    tokens = torch.randint(0, 32000, (spec.tokens,), generator=gen)
    ref = torch.randn(spec.num_layers, 2, spec.tokens, hidden, generator=gen).to(dtype)
    engine, connector, name = _engine(spec, dtype, device)
    result: dict[str, Any] = {"role": "produce", "connector": f"{type(connector).__module__}."
                              f"{type(connector).__name__}", "hash_of_none": hash(None)}
    try:
        paged = _Paged(spec, dtype, device, gen)
        slots = _slots(paged.num_blocks, spec.block_size, spec.tokens, gen)
        paged.write(slots, ref)
        t0 = time.perf_counter()
        engine.store(tokens, kvcaches=paged.kv, slot_mapping=slots)
        expect = spec.tokens if spec.save_unfull_chunk else spec.tokens // spec.chunk_size * spec.chunk_size
        deadline, hit = time.monotonic() + spec.flush_timeout, 0
        while time.monotonic() < deadline:  # remote puts are asynchronous: poll until every chunk is there
            hit = _lookup(engine, tokens)
            if hit >= expect:
                break
            time.sleep(0.05)
        keys = [key.to_string() for _, _, key in engine.token_database.process_tokens(tokens=tokens)]
        result.update(stored=expect, remote_hit=hit, store_s=time.perf_counter() - t0, chunk_keys=keys)
        torch.save({"tokens": tokens, "kv": ref, "spec": dataclasses.asdict(spec)}, spec.reference)
    finally:
        result.update(_close(name, spec.close_timeout))
    return result


def _inject(spec: Spec) -> dict:
    """Kill or freeze the storage server, and wait until it took effect (no fixed sleep)."""
    from .hetero_servers import _state, wait_until

    if spec.fault is None:
        return {}
    if spec.server_pid is None:
        raise ValueError(f"fault={spec.fault!r} needs server_pid")
    pid = spec.server_pid
    sig, done = {"kill": (signal.SIGKILL, lambda: _state(pid) in (None, "Z")),
                 "freeze": (signal.SIGSTOP, lambda: _state(pid) in ("T", "t"))}[spec.fault]
    os.kill(pid, sig)
    wait_until(done, 30, f"server pid {pid} to take {sig.name}")
    return {"fault_injected": spec.fault}


def _thaw(spec: Spec) -> None:
    from .hetero_servers import _state, wait_until

    if spec.fault == "freeze" and spec.thaw and _state(spec.server_pid) in ("T", "t"):
        os.kill(spec.server_pid, signal.SIGCONT)
        wait_until(lambda: _state(spec.server_pid) not in ("T", "t"), 30, f"server pid {spec.server_pid} to continue")


def consume(spec: Spec) -> dict:
    """Run the consumer under a deadline: a hang is reported (with its stack), never waited out."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = _consume(spec)
        except BaseException as exc:  # reported to the test
            box["result"] = {"role": "consume", "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()[-4000:]}

    thread = threading.Thread(target=run, name="hetero-consume", daemon=True)
    start = time.perf_counter()
    thread.start()
    thread.join(spec.deadline)
    if "result" in box:
        return box["result"]
    frame = sys._current_frames().get(thread.ident)
    stack = "".join(traceback.format_stack(frame)[-10:]) if frame is not None else None
    _thaw(spec)
    return {"role": "consume", "hung": True, "hung_after_s": time.perf_counter() - start, "hung_stack": stack}


def _consume(spec: Spec) -> dict:
    import torch

    dtype = getattr(torch, spec.dtype)
    device = torch.device("hpu:0")
    saved = torch.load(spec.reference)
    tokens, ref = saved["tokens"], saved["kv"]
    gen = torch.Generator().manual_seed(spec.seed + 1)
    engine, connector, name = _engine(spec, dtype, device)
    result: dict[str, Any] = {"role": "consume", "connector": f"{type(connector).__module__}."
                              f"{type(connector).__name__}", "hash_of_none": hash(None)}
    try:
        paged = _Paged(spec, dtype, device, gen)
        slots = _slots(paged.num_blocks, spec.block_size, spec.tokens, gen)
        before = paged.snapshot()
        result["chunk_keys"] = [key.to_string() for _, _, key in engine.token_database.process_tokens(tokens=tokens)]
        if spec.fault_at == "lookup":
            result.update(_inject(spec))
        t0 = time.perf_counter()
        hit = _lookup(engine, tokens)
        t1 = time.perf_counter()
        result.update(hit=hit, lookup_s=t1 - t0)
        if spec.fault_at == "retrieve":
            result.update(_inject(spec))
        t2 = time.perf_counter()
        ret = engine.retrieve(tokens, kvcaches=paged.kv, slot_mapping=slots.to(device))
        t3 = time.perf_counter()
        _thaw(spec)
        mask = ret.cpu().bool()
        after = paged.snapshot()
        restored = slots[mask[: len(slots)]]
        n = int(mask.sum())
        # A reference of another geometry (the guard specs) can never be restored bit-exact here.
        same_geometry = tuple(ref.shape[:2]) + (ref.shape[3],) == tuple(after.shape[:2]) + (after.shape[3],)
        expected_after = before.clone()
        if n and same_geometry:
            expected_after[:, :, restored] = ref[:, :, mask].to(expected_after.dtype)
        written = (after != before).any(dim=-1).any(dim=0).any(dim=0)  # [slots]: anything changed there
        outside = torch.ones_like(written)
        outside[restored] = False
        bit_exact = None
        if n:
            bit_exact = same_geometry and bool(torch.equal(after[:, :, restored], ref[:, :, mask].to(after.dtype)))
        result.update(
            retrieved=n, retrieve_s=t3 - t2, prefix=bool(mask[:n].all()) if n else True, bit_exact=bit_exact,
            untouched_elsewhere=bool(torch.equal(after[:, :, outside], before[:, :, outside])),
            written_outside=int((written & outside).sum()), written_slots=int(written.sum()),
            equals_expected=bool(torch.equal(after, expected_after)) and (n == 0 or same_geometry))
    finally:
        result.update(_close(name, spec.close_timeout))
    return result


def main(argv: list[str] | None = None) -> int:
    from . import results

    argv = sys.argv[1:] if argv is None else argv
    given = json.loads(argv[0])
    specs = [Spec(**d) for d in (given if isinstance(given, list) else [given])]
    handler = _Warnings()
    logging.getLogger("hpu_shim").addHandler(handler)
    for spec in specs:  # one interpreter for many specs: LMCache imports take most of the time
        handler.messages = []
        try:
            with _Without(spec.without):
                result = {"produce": produce, "consume": consume}[spec.role](spec)
        except BaseException as exc:  # reported to the test, which asserts on it
            result = {"role": spec.role, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
        result["warnings"] = handler.messages
        result["spec"] = dataclasses.asdict(spec)
        results.emit(result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LMCache leaves non-daemon threads (event loops, monitors) behind


if __name__ == "__main__":
    main()
