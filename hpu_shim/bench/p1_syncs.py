"""P1: device syncs per batched store and retrieve, the shim's HPU path vs LMCache's own.

Real, unmodified releases run ``hpu_shim.testing.lmcache_roundtrip`` on the emulated HPU in lazy
mode, configured like a Gaudi container (sitecustomize + ``HPU_SHIM=1``): a CUDA-only release
whose connector the shim substitutes, and a release with LMCache's own HPU connector
(``VLLMPagedMemHPUConnectorV2``). The KV is vllm-gaudi's ``TensorTuple`` layout with vLLM-style
slot runs, moved to the device as LMCache's vLLM adapter does (so the shim takes its per-token
path). Counts do not depend on tensor size, so heads are tiny; the layer count is Llama-8B's.
"""

from __future__ import annotations

import json
import sys

from . import _proc, report
from .config import Options
from .report import Row, verdict

__all__ = ["run"]

BLOCK, CHUNK = 128, 256
MAX_MARK_STEP, MAX_SYNC = 2, 1


def _cases(opts: Options) -> list[dict]:
    return [{"layout": "kv_tuple", "dtype": "bfloat16", "num_layers": opts.p1_layers, "tokens": t, "heads": 1,
             "head_dim": 8, "block_size": BLOCK, "num_blocks": t // BLOCK + 8, "chunk_size": CHUNK,
             "slots": "paged", "save_unfull_chunk": True} for t in opts.p1_tokens]


def _roundtrips(opts: Options, version: str) -> list[dict]:
    from ..runtime.runtime import bootstrap_dir

    path = _proc.release(opts.envs, version)
    if path is None:
        raise FileNotFoundError(f"LMCache {version} is not installed in {opts.envs} (make lmcache-envs)")
    environ = _proc.env([bootstrap_dir(), path], opts.cache, HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1",
                        HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE="1")
    argv = [sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps(_cases(opts))]
    return _proc.results(argv, environ, timeout=900)


def _ok(result: dict) -> bool:
    return "error" not in result and result.get("bit_exact") is True and result.get("untouched_elsewhere") is True


def run(opts: Options) -> tuple[list[Row], dict]:
    raw: dict = {}
    runs = {}
    for role, version in (("shim", opts.shim_release), ("native", opts.native_release)):
        try:
            runs[role] = _roundtrips(opts, version)
        except (FileNotFoundError, _proc.BenchError) as exc:
            runs[role] = str(exc)
        raw[role] = {"release": version, "results": runs[role]}
    rows = []
    for i, tokens in enumerate(opts.p1_tokens):
        chunks = -(-tokens // CHUNK)
        for phase in ("store", "retrieve"):
            figure = f"syncs per batched {phase}, {report.size(tokens)} tokens, {opts.p1_layers} layers"
            target = f"shim <= {MAX_MARK_STEP} mark_step + <= {MAX_SYNC} synchronize"
            shim, native = runs["shim"], runs["native"]
            if isinstance(shim, str):
                rows.append(Row("P1", figure, f"not run: {shim.splitlines()[0]}", target, "SKIP"))
                continue
            r = shim[i]
            if not _ok(r):
                rows.append(Row("P1", figure, f"shim round-trip failed: {r.get('error', r)}"[:160], target, "FAIL"))
                continue
            s = r[f"{phase}_counts"]
            value = (f"shim {opts.shim_release}: {s['mark_step_calls']} mark_step / {s['synchronize_calls']} sync "
                     f"({s['graph_flushes']} graph launches)")
            if isinstance(native, str):
                value += f"; native: not run ({native.splitlines()[0][:60]})"
            elif _ok(native[i]):
                n = native[i][f"{phase}_counts"]
                value += (f"; native {opts.native_release}: {n['mark_step_calls']} / {n['synchronize_calls']} "
                          f"(= {n['mark_step_calls'] / chunks:g} / {n['synchronize_calls'] / chunks:g} per chunk "
                          f"x {chunks} chunks)")
            else:
                value += f"; native failed: {native[i].get('error', 'not bit-exact')}"[:80]
            ok = s["mark_step_calls"] <= MAX_MARK_STEP and s["synchronize_calls"] <= MAX_SYNC
            rows.append(Row("P1", figure, value, target, verdict(ok)))
    return rows, raw
