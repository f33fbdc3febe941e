"""Test helpers for hpu_shim.transfer: KV caches in every layout, an independent slot-major reference, and cases.

The reference (:func:`slot_major`) is written per layout from the layouts' definitions, not from
``hpu_shim.transfer.layouts``, so the transfer path is never checked against itself. A case is
drawn through a ``Draw`` (hypothesis' ``data.draw`` in-process, a seeded ``random.Random`` in the
emulator children), so every failure replays from its seed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import torch

#: layout -> (uses MLA, block size must be passed, K/V count)
LAYOUTS = {
    "5d": (False, False, 2),
    "flashinfer": (False, False, 2),
    "kv": (False, False, 2),
    "flat": (False, True, 2),
    "mla": (True, False, 1),
    "mla_flat": (True, True, 1),
    "vllm_cpu": (False, False, 2),
}
DTYPES = ("bfloat16", "float16", "float32", "int8")
SLOTS = ("vllm", "fresh", "random", "holes")


def _rand(shape: tuple, dtype: Any, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    return torch.randn(*shape, generator=g).to(dtype)


def make_cache(layout: str, nb: int, bs: int, heads: int, dim: int, layers: int, dtype: Any, device: str = "cpu",
               seed: int = 0) -> list:
    """``layers`` per-layer caches in ``layout``, random contents."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "5d": (2, nb, bs, heads, dim),
        "flashinfer": (nb, 2, bs, heads, dim),
        "kv": (nb, bs, heads, dim),
        "flat": (nb * bs, heads, dim),
        "mla": (nb, bs, dim),
        "mla_flat": (nb * bs, dim),
        "vllm_cpu": (nb, heads, bs, 2 * dim),
    }
    out = []
    for _ in range(layers):
        if layout in ("kv", "flat"):
            out.append((_rand(shapes[layout], dtype, g).to(device), _rand(shapes[layout], dtype, g).to(device)))
        else:
            out.append(_rand(shapes[layout], dtype, g).to(device))
    return out


def tensors_of(kvcaches: list) -> list:
    return [t for layer in kvcaches for t in (layer if isinstance(layer, tuple) else (layer,))]


def slot_major(kvcaches: list, layout: str, nb: int, bs: int) -> torch.Tensor:
    """The whole cache as ``[kv, L, NB*BS, hidden]`` on the host: every element once, by slot."""
    per_layer = []
    for layer in kvcaches:
        if layout == "5d":
            t = layer.cpu().reshape(2, nb * bs, -1)
        elif layout == "flashinfer":
            t = layer.cpu().permute(1, 0, 2, 3, 4).reshape(2, nb * bs, -1)
        elif layout in ("kv", "flat"):
            t = torch.stack([x.cpu().reshape(nb * bs, -1) for x in layer])
        elif layout in ("mla", "mla_flat"):
            t = layer.cpu().reshape(1, nb * bs, -1)
        elif layout == "vllm_cpu":
            h, two_d = layer.shape[1], layer.shape[3]
            t = layer.cpu().view(nb, h, 2, bs, two_d // 2).permute(2, 0, 3, 1, 4).reshape(2, nb * bs, -1)
        else:
            raise ValueError(layout)
        per_layer.append(t)
    return torch.stack(per_layer, dim=1)


Draw = Callable[[list], Any]


@dataclasses.dataclass
class Case:
    layout: str
    dtype: str
    bs: int
    nb: int
    heads: int
    dim: int
    layers: int
    slots: str
    tokens: int
    prefix: int  # tokens before the first chunk: -1 in the slot mapping, never moved
    chunk: int
    dropped: tuple  # indices of chunks left out (non-adjacent chunks)
    seed: int

    def cache(self, device: str = "cpu") -> list:
        return make_cache(self.layout, self.nb, self.bs, self.heads, self.dim, self.layers,
                          getattr(torch, self.dtype), device, self.seed)

    @property
    def block_size_hint(self) -> int | None:
        return self.bs if LAYOUTS[self.layout][1] else None

    @property
    def use_mla(self) -> bool:
        return LAYOUTS[self.layout][0]

    def slot_mapping(self) -> torch.Tensor:
        """A full-length mapping (one slot per token, -1 before ``prefix``), as vLLM/LMCache build it."""
        rng = random.Random(self.seed)
        need = -(-self.tokens // self.bs)
        blocks = list(range(self.nb))
        if self.slots == "fresh":  # a fresh request: consecutive ascending ids from a random start
            first = rng.randrange(self.nb - need + 1)
            order = blocks[first: first + need]
        else:  # the free queue after frees: LIFO runs come back reversed, cached ones in LRU order
            rng.shuffle(blocks)
            order = blocks[:need]
            if self.slots == "vllm" and need > 2:
                a = rng.randrange(need - 1)
                run = sorted(order[a:])[: need - a]
                order[a:] = run[::-1] if rng.random() < 0.5 else run
        sm = (torch.tensor(order)[:, None] * self.bs + torch.arange(self.bs)).flatten()[: self.tokens]
        if self.slots == "random":
            sm = torch.randperm(self.nb * self.bs, generator=torch.Generator().manual_seed(self.seed))[: self.tokens]
        elif self.slots == "holes":  # one token's slot lies in a block the request does not own
            spare = [b for b in range(self.nb) if b not in order]
            i = rng.randrange(self.tokens)
            sm[i] = rng.choice(spare) * self.bs + rng.randrange(self.bs)
        sm = sm.clone()
        sm[: self.prefix] = -1
        return sm

    def chunks(self) -> tuple[list, list]:
        bounds = [(s, min(s + self.chunk, self.tokens)) for s in range(self.prefix, self.tokens, self.chunk)]
        kept = [b for i, b in enumerate(bounds) if i not in self.dropped] or bounds[:1]
        return [s for s, _ in kept], [e for _, e in kept]


def draw_case(draw: Draw, draw_int: Callable[[int, int], int], layouts=tuple(LAYOUTS), big: bool = False) -> Case:
    """A random valid case; block sizes 16-256, chunks aligned or not, prefixes, dropped chunks."""
    layout = draw(list(layouts))
    dtype = draw(list(DTYPES))
    bs = draw([16, 32, 64, 128, 256])
    heads = draw([1, 2, 4])
    dim = draw([8, 16] if not big else [64, 128])
    layers = draw_int(1, 3)
    tokens = draw_int(1, 6 * bs)
    nb = max(3, -(-tokens // bs) + draw_int(1, 4))  # NB == 2 is ambiguous between 5-D and flashinfer
    chunk = draw([bs, 2 * bs, 256, max(1, bs // 2), 100])
    nchunks = -(-tokens // chunk)
    prefix = chunk * draw_int(0, max(0, nchunks - 1)) if draw([True, False]) else 0
    prefix = min(prefix, tokens - 1)
    dropped = tuple(i for i in range(1, nchunks) if draw_int(0, 3) == 0)
    return Case(layout, dtype, bs, nb, heads, dim, layers, draw(list(SLOTS)), tokens, prefix, chunk, dropped,
                draw_int(0, 2**31 - 1))


def seeded_case(seed: int, **kw: Any) -> Case:
    rng = random.Random(seed)
    return draw_case(rng.choice, rng.randint, **kw)


def roundtrip(case: Case, device: str = "cpu", corrupt: Callable | None = None, slots_on_device: bool = True) -> list:
    """Store then retrieve one case; returns the problems found (empty = bit-exact, nothing else written).

    ``corrupt(outs)`` runs between store and the check (negative control: the check must then fail).
    """
    from hpu_shim import transfer

    problems = []
    kvc = case.cache(device)
    cache = transfer.kv_cache(kvc, use_mla=case.use_mla, block_size=case.block_size_hint)
    sm = case.slot_mapping()
    starts, ends = case.chunks()
    sm_dev = sm.to(device) if slots_on_device else sm
    dtype = getattr(torch, case.dtype)
    kv = LAYOUTS[case.layout][2]
    before = slot_major(kvc, case.layout, case.nb, case.bs)
    sentinel = torch.full((), 7, dtype=dtype)
    outs = [torch.full((kv, case.layers, e - s + 5, before.shape[-1]), 7, dtype=dtype) for s, e in zip(starts, ends)]
    transfer.store(cache, sm_dev, starts, ends, outs)
    if corrupt is not None:
        corrupt(outs)
    for i, (o, s, e) in enumerate(zip(outs, starts, ends)):
        if not torch.equal(o[:, :, : e - s], before[:, :, sm[s:e]]):
            problems.append(f"store: chunk {i} [{s}, {e}) differs from the cache's slots")
        if not bool((o[:, :, e - s:] == sentinel).all()):
            problems.append(f"store: chunk {i} memory object written past its {e - s} tokens")
    if not torch.equal(slot_major(kvc, case.layout, case.nb, case.bs), before):
        problems.append("store: the paged cache changed")
    new = [torch.randn(o.shape, generator=torch.Generator().manual_seed(case.seed + i)).to(dtype)
           if dtype.is_floating_point else torch.randint(-128, 128, o.shape, dtype=dtype)
           for i, o in enumerate(outs)]
    transfer.retrieve(cache, new, sm_dev, starts, ends)
    expected = before.clone()
    for n, s, e in zip(new, starts, ends):
        expected[:, :, sm[s:e]] = n[:, :, : e - s]
    after = slot_major(kvc, case.layout, case.nb, case.bs)
    if not torch.equal(after, expected):
        wrong = (after != expected).any(dim=-1).any(dim=0).any(dim=0).nonzero().flatten().tolist()
        moved = set(torch.cat([sm[s:e] for s, e in zip(starts, ends)]).tolist())
        elsewhere = [w for w in wrong if w not in moved]
        problems.append(f"retrieve: {len(wrong)} slots differ ({len(elsewhere)} outside the mapping, "
                        f"e.g. {elsewhere[:5] or wrong[:5]})")
    return problems
