"""G: compiles over a sweep of prompt lengths (a proxy for recompiles), in lazy and in eager mode.

The shim's transfer kernels (``hpu_shim.transfer.store``/``retrieve``, what its connectors run) move a
vllm-gaudi-shaped cache on the emulated HPU for geometrically spaced prompt lengths, with the compile
caches cleared first, so every compile is a new signature. Lazy mode (``PT_HPU_LAZY_MODE=1``): each
call's graph compiles are split at its first ``mark_step``: before it, the graph that prepares the
index; after it, the transfer graph, whose shapes the shim buckets (the bridge's ``mark_step`` is
wrapped to see where a call's graphs end; a call with none fails the row rather than counting nothing).
Eager mode: no graphs; each op compiles once per (op, dtypes, ranks) key (``docs/gaudi-semantics.md``),
counted over the whole sweep. Two placements of the slot mapping: on the device (LMCache's vLLM adapter moves it there:
the per-token path; its raw length cannot be hidden from the graph that slices it) and on the host
(the whole-block path).
"""

from __future__ import annotations

import math

from . import _proc
from .config import Options
from .report import Row, verdict

__all__ = ["run", "measure", "lengths", "MODES"]

PER_OCTAVE = 4  # transfer.bucket: {1, 1.25, 1.5, 1.75} x 2**k
#: mode -> (PT_HPU_LAZY_MODE, the emulator counter that counts its compiles, row label)
MODES = {"lazy": ("1", "graph_compiles", "emulated HPU, lazy"),
         "eager": ("0", "eager_compiles", "emulated HPU, eager")}


def lengths(count: int, high: int, low: int = 100) -> list[int]:
    return sorted({round(low * (high / low) ** (i / (count - 1))) for i in range(count)})


def measure(layers: int, count: int, high: int, counter: str, block: int = 128, chunk: int = 256) -> dict:
    import torch

    from .. import testing as emu

    emu.install_emulator()
    import habana_frameworks.torch.core as htcore

    marks: list[int] = []  # the compile counter at each mark_step of the current call
    bridge_mark_step = htcore.mark_step

    def mark_step(*args, **kwargs) -> None:  # the bridge's, recording where each call's graphs end
        bridge_mark_step(*args, **kwargs)
        marks.append(emu.counters()[counter])

    htcore.mark_step = mark_step  # before the kernels are imported: they take the bridge's mark_step
    from .. import transfer

    blocks = high // block + 8
    kv = [torch.zeros(2, blocks, block, 1, 8, dtype=torch.bfloat16).to("hpu") for _ in range(layers)]
    cache = transfer.kv_cache(kv)
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(0))
    slots = (order[:, None] * block + torch.arange(block)).flatten()
    sweep = lengths(count, high)
    out: dict = {"lengths": sweep, "layers": layers, "counter": counter, "lazy": emu.is_lazy()}
    for where in ("device", "host"):
        for op in ("gather", "scatter"):
            bridge_mark_step()
            emu.clear_graph_cache()
            index, unsplit = 0, 0
            with emu.count() as c:
                for n in sweep:
                    marks.clear()
                    before = emu.counters()[counter]
                    # uploaded right before the call, as LMCache's adapter does: it joins the index graph
                    sm = slots[:n].to("hpu") if where == "device" else slots[:n]
                    starts = list(range(0, n, chunk))
                    ends = [min(s + chunk, n) for s in starts]
                    objs = [torch.zeros(2, layers, e - s, 8, dtype=torch.bfloat16) for s, e in zip(starts, ends)]
                    if op == "gather":
                        transfer.store(cache, sm, starts, ends, objs)
                    else:
                        transfer.retrieve(cache, objs, sm, starts, ends)
                    if marks:
                        index += marks[0] - before
                    else:
                        unsplit += 1
            d = c.as_dict()
            out[f"{where}_{op}"] = {"compiles": d[counter], "index_graphs": index, "unsplit_calls": unsplit,
                                    "transfer_graphs": d[counter] - index, "flushes": d["graph_flushes"]}
    return out


def run(opts: Options) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    raw: dict = {}
    for mode, (lazy, counter, label) in MODES.items():
        environ = _proc.env(cache=opts.cache, PT_HPU_LAZY_MODE=lazy)
        r = raw[mode] = _proc.run_child("g_graphs", {"layers": opts.sweep_layers, "count": opts.sweep_lengths,
                                                     "high": opts.sweep_max, "counter": counter}, environ)
        sweep = r["lengths"]
        octaves = math.log2(sweep[-1] / sweep[0])
        bound = PER_OCTAVE * math.ceil(octaves) + PER_OCTAVE
        span = f"{len(sweep)} prompt lengths {sweep[0]}..{sweep[-1]} (log2 span {octaves:.1f})"
        target = f"O(log): <= {PER_OCTAVE}/octave (<= {bound})"
        for where, why in (("device", "slot mapping on the device (per-token path)"),
                           ("host", "slot mapping on the host (whole-block path)")):
            g, s = r[f"{where}_gather"], r[f"{where}_scatter"]
            path = f"hpu_shim.transfer.store / retrieve, {why}, {opts.sweep_layers} layers"
            row = dict(mode=label, path=path)
            if mode == "eager":  # no graphs to split: every op compiles once per (op, dtypes, ranks)
                value = (f"per-op compiles (op, dtypes, ranks): gather {g['compiles']}, scatter {s['compiles']} "
                         f"over {span}")
                rows.append(Row("G", f"compiles (eager), slot mapping on the {where}", value, target,
                                verdict(max(g["compiles"], s["compiles"]) <= bound), **row))
                continue
            unsplit = g["unsplit_calls"] + s["unsplit_calls"]
            value = (f"graph compiles after each call's first mark_step: gather {g['transfer_graphs']}, scatter "
                     f"{s['transfer_graphs']} over {span}; {g['transfer_graphs'] / octaves:.1f}/octave")
            if unsplit:  # a call without mark_step cannot be split: never pass on a count of nothing
                value += f"; {unsplit} calls launched no mark_step, so their graphs could not be attributed"
            ok = max(g["transfer_graphs"], s["transfer_graphs"]) <= bound and not unsplit
            rows.append(Row("G", f"transfer-graph signatures (lazy), slot mapping on the {where}", value, target,
                            verdict(ok), **row))
            index_ok = max(g["index_graphs"], s["index_graphs"]) <= bound and not unsplit
            rows.append(Row("G", f"index-graph signatures (lazy), slot mapping on the {where}",
                            f"graph compiles before each call's first mark_step: gather {g['index_graphs']}, "
                            f"scatter {s['index_graphs']} for {len(sweep)} lengths",
                            "report it (raw length on the device)" if where == "device" else f"<= {bound}",
                            "INFO" if where == "device" else verdict(index_ok), **row))
    return rows, raw
