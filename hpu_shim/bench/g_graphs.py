"""G: compiles over a sweep of prompt lengths (a proxy for recompiles), in lazy and in eager mode.

The shim's transfer kernels (``hpu_shim.transfer.kv_transfer``, what its connector runs) move a
vllm-gaudi-shaped cache on the emulated HPU for geometrically spaced prompt lengths, with the compile
caches cleared first, so every compile is a new signature. Lazy mode (``PT_HPU_LAZY_MODE=1``): each
call's graph compiles are split at its first ``mark_step``: before it, the graph that prepares the
index; after it, the transfer graph, whose shapes the shim buckets. Eager mode: ``mark_step`` is a
no-op and each op compiles per (op, dtypes, ranks) key (``docs/gaudi-semantics.md``), counted the
same way. Two placements of the slot mapping: on the device (LMCache's vLLM adapter moves it there:
the per-token path; its raw length cannot be hidden from the graph that slices it) and on the host
(the whole-block path).
"""

from __future__ import annotations

import math

from . import _proc
from .config import Options
from .report import Row, verdict

__all__ = ["run", "measure", "lengths", "MODES"]

PER_OCTAVE = 4  # kv_transfer.bucket: {1, 1.25, 1.5, 1.75} x 2**k
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

    from ..transfer import kv_transfer

    blocks = high // block + 8
    kv = [torch.zeros(2, blocks, block, 1, 8, dtype=torch.bfloat16).to("hpu") for _ in range(layers)]
    _, views = kv_transfer.normalize(kv)
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(0))
    slots = (order[:, None] * block + torch.arange(block)).flatten()
    sweep = lengths(count, high)
    out: dict = {"lengths": sweep, "layers": layers, "counter": counter, "lazy": emu.is_lazy()}
    for where in ("device", "host"):
        for op in ("gather", "scatter"):
            htcore.mark_step()
            emu.clear_graph_cache()
            marks: list[int] = []

            def mark_step() -> None:
                htcore.mark_step()
                marks.append(emu.counters()[counter])

            index = 0
            with emu.count() as c:
                for n in sweep:
                    marks.clear()
                    before = emu.counters()[counter]
                    # uploaded right before the call, as LMCache's adapter does: it joins the index graph
                    sm = slots[:n].to("hpu") if where == "device" else slots[:n]
                    starts = list(range(0, n, chunk))
                    ends = [min(s + chunk, n) for s in starts]
                    if op == "gather":
                        kv_transfer.gather(views, sm, starts, ends, mark_step)
                    else:
                        host = torch.zeros(2, layers, n, 8, dtype=torch.bfloat16)
                        kv_transfer.scatter(views, host, sm, starts, ends, mark_step, torch.hpu.synchronize)
                    index += (marks[0] if marks else emu.counters()[counter]) - before
            d = c.as_dict()
            out[f"{where}_{op}"] = {"compiles": d[counter], "index_graphs": index,
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
        what = "graph compiles" if mode == "lazy" else "per-op compiles (op, dtypes, ranks)"
        for where, why in (("device", "slot mapping on the device (per-token path)"),
                           ("host", "slot mapping on the host (whole-block path)")):
            g, s = r[f"{where}_gather"], r[f"{where}_scatter"]
            path = f"hpu_shim.transfer.kv_transfer gather / scatter, {why}, {opts.sweep_layers} layers"
            value = (f"{what} after the first mark_step: gather {g['transfer_graphs']}, scatter "
                     f"{s['transfer_graphs']} over {span}; {g['transfer_graphs'] / octaves:.1f}/octave")
            ok = max(g["transfer_graphs"], s["transfer_graphs"]) <= bound
            rows.append(Row("G", f"transfer-graph signatures ({mode}), slot mapping on the {where}", value,
                            f"O(log): <= {PER_OCTAVE}/octave (<= {bound})", verdict(ok), mode=label, path=path))
            index_ok = max(g["index_graphs"], s["index_graphs"]) <= bound
            rows.append(Row("G", f"index-graph signatures ({mode}), slot mapping on the {where}",
                            f"{what} before the first mark_step: gather {g['index_graphs']}, scatter "
                            f"{s['index_graphs']} for {len(sweep)} lengths",
                            "report it (raw length on the device)" if where == "device" else f"<= {bound}",
                            "INFO" if where == "device" else verdict(index_ok), mode=label, path=path))
    return rows, raw
