"""Seeded property tests of the shim's connectors, through the connector a real LMCache release builds.

Run inside a child configured like ``lmcache_roundtrip`` (one interpreter per release: LMCache
imports are slow), as the ``properties`` case kind. Each example is drawn by ``hypothesis`` from a
fixed seed and is one of:

* a *connector* case: the connector LMCache itself builds for vLLM (``CreateGPUConnector`` or the
  0.3.x adapter call) with memory objects from LMCache's own allocator (the engine's storage
  manager). Layouts, dtypes, block sizes 16 - 256, chunk sizes, slot mappings (random, vLLM-style
  runs, runs with holes and a ``-1`` prefix), slot mappings on the device or the host, partial
  prefix hits (the first chunks not transferred). A valid case stores (memory objects equal an
  independent host gather, the KV cache untouched), wipes, retrieves (``torch.equal`` on the slots,
  zeros everywhere else). A malformed case (bad slot mapping, memory objects of the wrong dtype,
  shape, layer count or format, mismatched starts/ends) must raise the shim's ``TransferInputError``
  naming the problem, with nothing written: the memory objects keep their sentinel bytes on a
  store, the KV cache its bytes on a retrieve;
* an *engine* case (``Case.engine_share`` of them): store -> lookup -> retrieve through LMCache's
  engine (``lmcache_roundtrip.run_case``) for what only the engine does: partial prefix hits and
  ``save_unfull_chunk``.

A failure reports the smallest failing example and the command that replays it alone:
``python -m hpu_shim.testing.lmcache_properties '<example json>'`` in the same environment.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["MALFORMED", "Example", "check_example", "main", "run_properties"]

#: Malformed inputs: name -> (calls it applies to, words the error must contain, needs a host slot mapping).
#: A device slot mapping's values are checked on the device (``hpu_shim.transfer``'s verdict), so none does.
MALFORMED: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "short_slots": (("store", "retrieve"), ("slot mapping has only",), False),
    "slot_out_of_range": (("store", "retrieve"), ("outside the KV cache",), False),
    "slot_negative": (("store", "retrieve"), ("= -1 is outside the KV cache",), False),
    "slot_float": (("store", "retrieve"), ("dtype",), False),
    "slot_2d": (("store", "retrieve"), ("1-D",), False),
    "no_slot_mapping": (("store", "retrieve"), ("slot_mapping",), False),
    "obj_dtype": (("store", "retrieve"), ("dtype",), False),
    "obj_hidden": (("store", "retrieve"), ("hidden size",), False),
    "obj_layers": (("store", "retrieve"), ("layers",), False),
    "obj_tokens": (("store", "retrieve"), ("tokens",), False),
    "starts_len": (("store", "retrieve"), ("(start, end)",), False),
    "start_after_end": (("store", "retrieve"), ("0 <= start < end",), False),
    "fmt_layerwise": (("retrieve",), ("KV_T2D",), False),
}

LAYOUTS = {"hpu": ("kv_tuple", "flat", "5d", "mla"), "cpu": ("vllm_cpu", "5d", "stacked", "kv_tuple", "mla")}


@dataclasses.dataclass
class Example:
    """One connector-level case (``engine`` False) or one engine round trip (``engine`` True)."""

    layout: str
    dtype: str
    num_layers: int
    heads: int
    head_dim: int
    block_size: int
    tokens: int
    chunk_size: int
    slots: str  # random | vllm | holes
    slots_on: str  # device | host
    skip_chunks: int  # partial prefix hit: the first chunks are not transferred (their slots are -1 with holes)
    extra_blocks: int
    malformed: str | None = None
    bad_call: str = "retrieve"
    engine: bool = False
    prefix_hit_chunks: int = 0  # engine: store only this many chunks, then retrieve all tokens
    save_unfull_chunk: bool | None = None
    seed: int = 0

    @property
    def hidden(self) -> int:
        return self.head_dim if self.layout == "mla" else self.heads * self.head_dim

    @property
    def num_blocks(self) -> int:
        gaps = -(-self.tokens // self.block_size) if self.slots == "holes" else 0
        return -(-self.tokens // self.block_size) + self.extra_blocks + gaps


def _examples(backend: str, engine: bool) -> Any:
    from hypothesis import strategies as st

    @st.composite
    def example(draw: Any) -> Example:
        layout = draw(st.sampled_from(LAYOUTS[backend]))
        heads = 1 if layout == "mla" else draw(st.sampled_from((1, 2, 4)))
        head_dim = draw(st.sampled_from((8, 16, 32) if not engine else (16, 32, 64)))
        block_size = draw(st.sampled_from((16, 32, 64, 128, 256)))
        chunk_size = draw(st.sampled_from((64, 128, 256) if engine else (16, 48, 64, 100, 128, 256, 512)))
        malformed = None if engine or draw(st.integers(0, 3)) else draw(st.sampled_from(sorted(MALFORMED)))
        tokens = draw(st.integers(2 if malformed == "obj_tokens" else 1, 1100 if engine else 600))
        n_chunks = -(-tokens // chunk_size)
        slots_on = draw(st.sampled_from(("device", "host")))
        if malformed is not None and MALFORMED[malformed][2]:
            slots_on = "host"
        bad_call = draw(st.sampled_from(MALFORMED[malformed][0])) if malformed else "retrieve"
        return Example(
            layout=layout, dtype=draw(st.sampled_from(("bfloat16", "float16", "float32"))),
            num_layers=draw(st.integers(1, 3)), heads=heads, head_dim=head_dim, block_size=block_size,
            tokens=tokens, chunk_size=chunk_size, slots=draw(st.sampled_from(("random", "vllm", "holes"))),
            slots_on=slots_on, skip_chunks=draw(st.integers(0, max(0, n_chunks - 1))),
            extra_blocks=draw(st.integers(0, 2)), malformed=malformed, bad_call=bad_call,
            engine=engine, prefix_hit_chunks=draw(st.integers(0, n_chunks - 1)) if engine else 0,
            save_unfull_chunk=draw(st.sampled_from((None, True, False))) if engine else None,
            seed=draw(st.integers(0, 2**31 - 1)),
        )

    return example()


def _explicit(backend: str) -> list[Example]:
    """Every malformed input on every call it applies to, once, whatever the random draw covers."""
    layouts = LAYOUTS[backend]
    out = []
    for i, (name, (calls, _, _)) in enumerate(sorted(MALFORMED.items())):
        for j, call in enumerate(calls):
            layout = layouts[(i + j) % len(layouts)]
            out.append(Example(layout=layout, dtype=("bfloat16", "float16", "float32")[i % 3], num_layers=2,
                               heads=1 if layout == "mla" else 2, head_dim=16, block_size=(16, 64, 128)[j % 3],
                               tokens=300, chunk_size=128, slots=("random", "vllm", "holes")[i % 3],
                               slots_on=("device", "host")[(i + j) % 2], skip_chunks=(i + j) % 2, extra_blocks=1,
                               malformed=name, bad_call=call, seed=i * 10 + j))
    return out


# ---- one example ----------------------------------------------------------------------------------------
def _slot_mapping(ex: Example, gen: Any) -> Any:
    """Host int64 slots, one per token; ``-1`` over the skipped prefix with holes (vLLM's prefix caching)."""
    import torch

    nb, bs = ex.num_blocks, ex.block_size
    if ex.slots == "random":
        slots = torch.randperm(nb * bs, generator=gen)[: ex.tokens]
    else:
        blocks = torch.randperm(nb, generator=gen)
        if ex.slots == "holes":  # every other free block used: runs separated by unused blocks
            blocks = blocks[::2]
        slots = (blocks[:, None] * bs + torch.arange(bs)).flatten()[: ex.tokens]
        if ex.slots == "holes":
            slots = slots.clone()
            slots[: ex.skip_chunks * ex.chunk_size] = -1
    return slots


def _chunks(ex: Example) -> tuple[list[int], list[int]]:
    starts = list(range(ex.skip_chunks * ex.chunk_size, ex.tokens, ex.chunk_size))
    return starts, [min(s + ex.chunk_size, ex.tokens) for s in starts]


class _Env:
    """What every example in one child shares: the allocating engine and LMCache's classes."""

    def __init__(self) -> None:
        import torch
        from lmcache.v1.memory_management import MemoryFormat

        from .lmcache_roundtrip import Case, _config, _device, _engine, _metadata

        self.MemoryFormat = MemoryFormat
        self.device = _device()
        self.backend = "cpu" if self.device.type == "cpu" else "hpu"
        from .lmcache_roundtrip import _connector as build

        base = Case(max_local_cpu_gb=0.25)
        config, metadata = _config(base), _metadata(base, torch.bfloat16)
        connector = build(config, metadata, base, torch.bfloat16, self.device)
        self.engine, self.name = _engine(base, connector, config, metadata)

    def allocate(self, shape: tuple, dtype: Any, fmt: Any) -> Any:
        import torch

        obj = self.engine.storage_manager.allocate(torch.Size(shape), dtype, fmt, busy_loop=False)
        if obj is None:
            raise RuntimeError(f"LMCache's allocator has no room for {shape} {dtype}")
        return obj

    def close(self) -> None:
        from .lmcache_roundtrip import _destroy

        _destroy(self.name)


def _connector(ex: Example, dtype: Any, device: Any) -> Any:
    from .lmcache_roundtrip import Case, _config, _metadata
    from .lmcache_roundtrip import _connector as build

    case = Case(layout=ex.layout, dtype=ex.dtype, num_layers=ex.num_layers, heads=ex.heads, head_dim=ex.head_dim,
                chunk_size=ex.chunk_size)
    return build(_config(case), _metadata(case, dtype), case, dtype, device)


def check_example(ex: Example, env: _Env) -> str:
    """Run one example; return its category (valid, malformed, engine) or raise AssertionError."""
    if ex.engine:
        return _check_engine(ex)
    import torch

    from .lmcache_roundtrip import Case, _paged_kv

    dtype = getattr(torch, ex.dtype)
    gen = torch.Generator().manual_seed(ex.seed)
    connector = _connector(ex, dtype, env.device)
    kv, reader = _paged_kv(Case(layout=ex.layout, num_layers=ex.num_layers, num_blocks=ex.num_blocks,
                                block_size=ex.block_size, heads=ex.heads, head_dim=ex.head_dim), dtype, env.device, gen)
    slots_host = _slot_mapping(ex, gen)
    starts, ends = _chunks(ex)
    kv_size = 1 if ex.layout == "mla" else 2
    fmt = env.MemoryFormat.KV_MLA_FMT if ex.layout == "mla" else env.MemoryFormat.KV_2LTD
    reference = reader.host()
    objs = [env.allocate((kv_size, ex.num_layers, e - s, ex.hidden), dtype, fmt) for s, e in zip(starts, ends)]
    try:
        if ex.malformed is not None:
            _check_malformed(ex, env, connector, kv, reader, reference, objs, slots_host, starts, ends, dtype, fmt)
            return "malformed"
        moved = slots_host[starts[0]:ends[-1]]  # the transferred tokens, in chunk order
        # [kv, L, tokens, hidden], gathered on the host from the reference copy (independent of the connector)
        want = torch.stack([torch.stack([ref[k].index_select(0, moved) for ref in reference]) for k in range(kv_size)])
        slot_mapping = slots_host.to(env.device) if ex.slots_on == "device" else slots_host
        with torch.inference_mode():  # how LMCache's engine calls its connector
            connector.batched_from_gpu(objs, starts, ends, kvcaches=kv, slot_mapping=slot_mapping)
        for i, (obj, s, e) in enumerate(zip(objs, starts, ends)):
            assert obj.metadata.fmt == fmt, f"chunk {i}: store left format {obj.metadata.fmt}, expected {fmt}"
            assert torch.equal(obj.tensor.cpu(), want[:, :, s - starts[0]:e - starts[0]]), \
                f"chunk {i} [{s}, {e}): stored bytes differ from the KV cache's"
        reader.zero()
        with torch.inference_mode():
            connector.batched_to_gpu(objs, starts, ends, kvcaches=kv, slot_mapping=slot_mapping)
        got = reader.host()
        for li, gl in enumerate(got):
            for k, g in enumerate(gl):
                assert torch.equal(g.index_select(0, moved), want[k, li]), f"layer {li} kv {k}: retrieved slots differ"
                g.index_fill_(0, moved, 0)
                assert not bool(g.any()), f"layer {li} kv {k}: a slot outside the mapping was written"
        return "valid"
    finally:
        for obj in objs:
            obj.ref_count_down()


def _check_malformed(ex: Example, env: _Env, connector: Any, kv: Any, reader: Any, reference: list, objs: list,
                     slots_host: Any, starts: list, ends: list, dtype: Any, fmt: Any) -> None:
    import torch

    _, words, _ = MALFORMED[ex.malformed]
    total = ex.num_blocks * ex.block_size
    slots = slots_host.clone()
    kwargs: dict[str, Any] = {"kvcaches": kv}
    kv_size = 1 if ex.layout == "mla" else 2
    s0, e0 = starts[-1], ends[-1]
    bad_objs, bad_starts, bad_ends = list(objs), list(starts), list(ends)
    spare = []
    if ex.malformed == "short_slots":
        slots = slots[: e0 - 1]
    elif ex.malformed == "slot_out_of_range":
        slots[(s0 + e0) // 2] = total
    elif ex.malformed == "slot_negative":
        slots[(s0 + e0) // 2] = -1
    elif ex.malformed == "slot_float":
        slots = slots.float()
    elif ex.malformed == "slot_2d":
        slots = slots[None, :]
    elif ex.malformed in ("obj_dtype", "obj_hidden", "obj_layers", "obj_tokens"):
        shape = [kv_size, ex.num_layers, e0 - s0, ex.hidden]
        odtype = dtype
        if ex.malformed == "obj_dtype":
            odtype = torch.float32 if dtype != torch.float32 else torch.bfloat16
        elif ex.malformed == "obj_hidden":
            shape[3] += 1
        elif ex.malformed == "obj_layers":
            shape[1] += 1
        elif e0 - s0 >= 2:
            shape[2] = e0 - s0 - 1
        else:  # a 1-token last chunk: claim 2 tokens for its 1-token object (tokens >= 2, so s0 >= 1)
            bad_starts[-1] = s0 - 1
        spare = [env.allocate(tuple(shape), odtype, fmt)]
        bad_objs[-1] = spare[0]
    elif ex.malformed == "starts_len":
        bad_starts = bad_starts[:-1]
    elif ex.malformed == "start_after_end":
        bad_starts[-1], bad_ends[-1] = e0, s0
    if ex.malformed != "no_slot_mapping":
        kwargs["slot_mapping"] = slots.to(env.device) if ex.slots_on == "device" else slots
    try:
        if ex.bad_call == "store":
            for o in bad_objs:
                o.tensor.fill_(3)  # sentinel bytes: a failed store must leave them
            before = [o.tensor.clone() for o in bad_objs]
            raised = _raises(lambda: connector.batched_from_gpu(bad_objs, bad_starts, bad_ends, **kwargs))
            _assert_clear(raised, ex, words)
            assert all(torch.equal(o.tensor, b) for o, b in zip(bad_objs, before)), \
                f"{ex.malformed}: the failed store wrote into a memory object"
        else:
            good = slots_host.to(env.device) if ex.slots_on == "device" else slots_host
            with torch.inference_mode():
                connector.batched_from_gpu(objs, starts, ends, kvcaches=kv, slot_mapping=good)
            if ex.malformed == "fmt_layerwise":
                bad_objs[-1].metadata.fmt = env.MemoryFormat.KV_T2D
            raised = _raises(lambda: connector.batched_to_gpu(bad_objs, bad_starts, bad_ends, **kwargs))
            _assert_clear(raised, ex, words)
            after = reader.host()
            assert all(torch.equal(a, r) for al, rl in zip(after, reference) for a, r in zip(al, rl)), \
                f"{ex.malformed}: the failed retrieve wrote into the KV cache"
    finally:
        for o in spare:
            o.ref_count_down()


def _raises(call: Any) -> BaseException | None:
    import torch

    try:
        with torch.inference_mode():  # how LMCache's engine calls its connector
            call()
    except Exception as exc:  # noqa: BLE001  (the assertion below says whether it is the right one)
        return exc
    return None


def _assert_clear(exc: BaseException | None, ex: Example, words: tuple[str, ...]) -> None:
    assert exc is not None, f"{ex.malformed} ({ex.bad_call}) was accepted silently"
    where = type(exc).__module__ or ""
    assert isinstance(exc, ValueError) and where.startswith("hpu_shim"), \
        f"{ex.malformed} ({ex.bad_call}) raised {type(exc).__module__}.{type(exc).__name__}: {exc}, not the shim's " \
        f"TransferInputError"
    assert all(w in str(exc) for w in words), f"{ex.malformed} ({ex.bad_call}): error does not say {words}: {exc}"


def _check_engine(ex: Example) -> str:
    from .lmcache_roundtrip import Case, run_case

    prefix = ex.prefix_hit_chunks * ex.chunk_size if ex.prefix_hit_chunks and ex.prefix_hit_chunks * ex.chunk_size \
        < ex.tokens else 0
    case = Case(layout=ex.layout, dtype=ex.dtype, num_layers=ex.num_layers, heads=ex.heads, head_dim=ex.head_dim,
                block_size=ex.block_size, num_blocks=ex.num_blocks, tokens=ex.tokens, chunk_size=ex.chunk_size,
                slots="paged" if ex.slots != "random" else "random", save_unfull_chunk=ex.save_unfull_chunk,
                prefix_hit=prefix, max_local_cpu_gb=0.05, seed=ex.seed)
    result = run_case(case)
    assert "error" not in result, result.get("error")
    full = ex.tokens // ex.chunk_size * ex.chunk_size
    want = prefix if prefix else ex.tokens if result["save_unfull_chunk"] else full
    assert result["retrieved"] == want, f"engine retrieved {result['retrieved']} tokens, expected {want}: {result}"
    if want:
        assert result["bit_exact"] is True and result["untouched_elsewhere"] is True, result
    return "engine"


# ---- the suite --------------------------------------------------------------------------------------------
def run_properties(case: Any) -> dict:
    """``case.examples`` seeded examples; a summary with counts, and the reproducer of a failure."""
    from collections import Counter

    from hypothesis import HealthCheck, example, given, seed, settings

    backend = "cpu" if os.environ.get("HPU_SHIM_BACKEND") == "cpu" else "hpu"
    env = _Env()
    counts: Counter = Counter()
    seconds: Counter = Counter()
    failing: list[Example] = []

    def record(ex: Example) -> None:
        gc.freeze()  # LMCache's engine calls gc.collect() on creation: leave out what exists already
        started = time.process_time()
        try:
            kind = check_example(ex, env)
        except BaseException:
            failing.append(ex)
            raise
        counts[kind] += 1
        seconds[kind] += time.process_time() - started
        counts["layout:" + ex.layout] += 1
        counts[f"slots:{ex.slots}/{ex.slots_on}"] += 1
        counts["dtype:" + ex.dtype] += 1
        if ex.skip_chunks and not ex.engine:
            counts["partial_prefix"] += 1
        if ex.malformed:
            counts[f"malformed:{ex.malformed}/{ex.bad_call}"] += 1

    n_engine = round(case.examples * case.engine_share)
    summary: dict[str, Any] = {"case": dataclasses.asdict(case), "backend": backend}
    try:
        for engine, n in ((False, case.examples - n_engine), (True, n_engine)):
            if not n:
                continue

            @seed(case.seed)
            @settings(max_examples=n, database=None, deadline=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @given(ex=_examples(backend, engine))
            def prop(ex: Example) -> None:
                record(ex)

            for ex in ([] if engine else _explicit(backend)):
                prop = example(ex=ex)(prop)
            prop()
        summary["ok"] = True
    except BaseException as exc:  # noqa: BLE001  (reported in the summary: the test asserts on it)
        summary.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-6000:])
    finally:
        env.close()
    summary["cpu_seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    if failing:
        example = json.dumps(dataclasses.asdict(failing[-1]))
        summary["reproducer"] = example
        summary["replay"] = (f"HPU_SHIM=1 HPU_SHIM_FAKE_HPU=1 HPU_SHIM_BACKEND={backend} "
                             f"PT_HPU_LAZY_MODE={os.environ.get('PT_HPU_LAZY_MODE', '0')} "
                             f"PYTHONPATH=sitecustomize:.envs/lmcache-<version>:. "
                             f"python -m hpu_shim.testing.lmcache_properties '{example}'")
    summary["counts"] = dict(counts)
    summary["examples_run"] = sum(counts[k] for k in ("valid", "malformed", "engine"))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Replay one example (the JSON a failure printed) and print its outcome."""
    argv = sys.argv[1:] if argv is None else argv
    ex = Example(**json.loads(argv[0]))
    env = _Env()
    try:
        print(f"{check_example(ex, env)}: ok")
        return 0
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
