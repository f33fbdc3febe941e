"""P1: device syncs per batched store and retrieve, through LMCache's engine, on every CI release.

Real, unmodified releases (0.3.7, 0.4.2, 0.4.3, 0.5.6) run ``hpu_shim.testing.lmcache_roundtrip``
on the emulated HPU in lazy and in eager mode (``MODES``), configured like a Gaudi container
(sitecustomize + ``HPU_SHIM=1``):
LMCache's engine with the connector it builds for vLLM, whatever the shim substitutes. The KV is
vllm-gaudi's ``TensorTuple`` layout with vLLM-style slot runs, the slot mapping moved to the device
as LMCache's vLLM adapter does. Counts do not depend on tensor size, so heads are tiny; the layer
count is Llama-8B's. For comparison, the full run also counts LMCache's own HPU connector
(``HPU_SHIM_NATIVE_CONNECTOR=1`` on the native release).

What counts (``COUNTED``): graph launches (``mark_step``; in lazy mode an ``Event.record`` that
flushes a graph launches one too) and host waits (``torch.hpu.synchronize``, stream and event
synchronizes, blocking device->host copies). A counter this emulator does not have is named in the
row, never silently taken as zero.
"""

from __future__ import annotations

import json
import sys

from . import _proc, report
from .config import Options
from .report import Row, verdict

__all__ = ["run", "COUNTED", "tally"]

BLOCK, CHUNK = 128, 256
#: mode -> (PT_HPU_LAZY_MODE, most graph launches, most host waits per batched call). Eager mode has no
#: graphs to launch: mark_step does nothing there (docs/gaudi-semantics.md "Execution modes"), so none is due.
MODES: dict[str, tuple[str, int, int]] = {"lazy": ("1", 2, 1), "eager": ("0", 0, 1)}

#: emulator counter -> (short name in the row, kind). Kinds: "launch" (graph launches), "wait" (host waits).
COUNTED: dict[str, tuple[str, str]] = {
    "mark_step_calls": ("mark_step", "launch"),
    "event_record_flushes": ("event-record flush", "launch"),
    "synchronize_calls": ("synchronize", "wait"),
    "stream_synchronize_calls": ("stream sync", "wait"),
    "event_synchronize_calls": ("event sync", "wait"),
    "blocking_d2h_copies": ("blocking D2H", "wait"),
}


def tally(counts: dict) -> dict:
    """Launches, waits, the nonzero parts by name, and the counters this emulator lacks."""
    out = {"launch": 0, "wait": 0, "parts": [], "missing": []}
    for field, (name, kind) in COUNTED.items():
        if field not in counts:
            out["missing"].append(field)
            continue
        out[kind] += counts[field]
        if counts[field]:
            out["parts"].append(f"{counts[field]} {name}")
    return out


def _cases(opts: Options) -> list[dict]:
    return [{"layout": "kv_tuple", "dtype": "bfloat16", "num_layers": opts.p1_layers, "tokens": t, "heads": 1,
             "head_dim": 8, "block_size": BLOCK, "num_blocks": t // BLOCK + 8, "chunk_size": CHUNK,
             "slots": "paged", "save_unfull_chunk": True} for t in opts.p1_tokens]


def _roundtrips(opts: Options, version: str, lazy: str = "1", **extra: str) -> list[dict]:
    from ..runtime.runtime import bootstrap_dir

    path = _proc.release(opts.envs, version)
    if path is None:
        raise FileNotFoundError(f"LMCache {version} is not installed in {opts.envs} (make lmcache-envs)")
    environ = _proc.env([bootstrap_dir(), path], opts.cache, HPU_SHIM="1", HPU_SHIM_FAKE_HPU="1",
                        HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE=lazy, **extra)
    argv = [sys.executable, "-m", "hpu_shim.testing.lmcache_roundtrip", json.dumps(_cases(opts))]
    return _proc.results(argv, environ, timeout=1800)


def _ok(result: dict) -> bool:
    return "error" not in result and result.get("bit_exact") is True and result.get("untouched_elsewhere") is True


def _describe(t: dict) -> str:
    text = f"{t['launch']} launches / {t['wait']} waits ({', '.join(t['parts']) or 'none'})"
    return text + (f"; this emulator does not count {', '.join(t['missing'])}" if t["missing"] else "")


def run(opts: Options) -> tuple[list[Row], dict]:
    raw: dict = {}
    runs: dict[tuple[str, str], list[dict] | str] = {}
    for mode, (lazy, _, _) in MODES.items():
        for version in opts.p1_releases:
            try:
                runs[mode, version] = _roundtrips(opts, version, lazy)
            except (FileNotFoundError, _proc.BenchError) as exc:
                runs[mode, version] = str(exc)
            raw[f"{mode} {version}"] = runs[mode, version]
    own: list[dict] | str | None = None
    if opts.p1_own:  # LMCache's own connector, for comparison: lazy mode, where its per-chunk syncs cost most
        try:
            own = _roundtrips(opts, opts.native_release, "1", HPU_SHIM_NATIVE_CONNECTOR="1")
        except (FileNotFoundError, _proc.BenchError) as exc:
            own = str(exc)
        raw["own"] = {"release": opts.native_release, "results": own}
    rows = []
    for mode, (_, max_launches, max_waits) in MODES.items():
        target = f"<= {max_launches} launches (mark_step) + <= {max_waits} host wait (synchronize) per batched call"
        for version in opts.p1_releases:
            for i, tokens in enumerate(opts.p1_tokens):
                rows.extend(_row(opts, mode, version, i, tokens, phase, runs[mode, version],
                                 own if mode == "lazy" else None, target, max_launches, max_waits)
                            for phase in ("store", "retrieve"))
    return rows, raw


def _row(opts: Options, mode: str, version: str, i: int, tokens: int, phase: str, res: list[dict] | str,
         own: list[dict] | str | None, target: str, max_launches: int, max_waits: int) -> Row:
    chunks = -(-tokens // CHUNK)
    figure = f"syncs per batched {phase}, {report.size(tokens)} tokens, {opts.p1_layers} layers"
    row = dict(id="P1", figure=figure, target=target, mode=f"emulated HPU, {mode}")
    if isinstance(res, str):
        return Row(**row, value=f"not run: {res.splitlines()[0]}"[:300], status="FAIL",
                   path=f"LMCache {version} engine.{phase}")
    r = res[i]
    path = f"LMCache {version} engine.{phase} -> {r.get('connector', '?')}"
    if r.get("substituted"):
        path += f" (hpu_shim: {r['substituted']})"
    if not _ok(r):
        why = r.get("error") or "not bit-exact"
        return Row(**row, value=f"round trip failed: {why}"[:300], status="FAIL", path=path)
    t = tally(r[f"{phase}_counts"])
    value = f"{_describe(t)}; {r[f'{phase}_counts'].get('graph_flushes', '?')} graph launches"
    if isinstance(own, list) and version == opts.native_release and _ok(own[i]):
        o = tally(own[i][f"{phase}_counts"])
        value += (f"; LMCache's own connector: {o['launch']} / {o['wait']} "
                  f"(= {o['launch'] / chunks:g} / {o['wait'] / chunks:g} per chunk x {chunks} chunks)")
    ok = t["launch"] <= max_launches and t["wait"] <= max_waits and not t["missing"]
    return Row(**row, value=value, status=verdict(ok), path=path)
