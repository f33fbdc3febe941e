"""Shape guards on the decode side: a stored chunk that does not fit this KV cache is a miss, not a load.

LMCache's keys carry the model *name*, world size, worker and (>= 0.4) dtype -- not the model's
shape. A prefill node serving another model under the same name therefore hands the decode node
chunks that LMCache moves into its KV cache regardless: fewer layers silently load the wrong KV, more
layers raise an ``IndexError`` deep in the connector, and a chunk in another memory format (the
layerwise ``KV_T2D`` that CUDA's layerwise connector writes) trips an assertion mid-transfer.

``check(engine, obj, span)`` compares one retrieved memory object with what this engine's KV cache
expects -- format, dtype, K/V planes, layers, hidden size (heads x head size) and token count -- and
names the first cause that differs. ``hpu_shim.compat.retrieve`` calls it on every chunk a retrieve
fetched, *before* LMCache's connector sees it: a mismatch becomes a failed fetch (that chunk and
every later one are recomputed, the prefix before it is kept), with one WARNING per engine and cause.

Not detectable here: another split of the same hidden size into heads (``[2, L, T, H*D]`` is all a
chunk records). ``python -m hpu_shim doctor`` prints the KV shape per layer to compare the nodes.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["expected", "check", "short", "reject", "CAUSES"]

log = logging.getLogger("hpu_shim")

#: cause -> what to tell the operator (the WARNING's second half).
CAUSES = {
    "format": "the prefill node stored it in another memory format{hint}; the decode side reads {want} only. "
              "Keep use_layerwise: false on the prefill node",
    "dtype": "the prefill node stores KV as {got}, this KV cache is {want}. Use the same kv dtype on both nodes",
    "kv planes": "the chunk has {got} K/V planes, this KV cache has {want} (MLA vs. standard attention)",
    "layers": "the chunk has {got} layers, this model has {want}: the prefill node serves another model under the "
              "same model name",
    "hidden size": "the chunk's hidden size (KV heads x head size) is {got}, this KV cache has {want}: the prefill "
                   "node serves another model under the same model name",
    "tokens": "the chunk holds {got} tokens but covers {want} (truncated or from another chunk size)",
}
_FORMAT_HINTS = {"KV_T2D": " (KV_T2D: LMCache's layerwise CUDA format)"}


def expected(engine: Any) -> dict | None:
    """What this engine's KV cache takes per chunk, from LMCache's own metadata (None if unknown)."""
    meta = getattr(engine, "metadata", None)
    shape = getattr(meta, "kv_shape", None)
    if meta is None or shape is None or len(shape) != 5:
        return None
    layers, planes, _, heads, head_size = (int(x) for x in shape)
    mla = bool(getattr(meta, "use_mla", False))
    return {"format": "KV_MLA_FMT" if mla else "KV_2LTD", "dtype": getattr(meta, "kv_dtype", None),
            "kv planes": 1 if mla else planes, "layers": layers, "hidden size": head_size if mla else heads * head_size}


def _found(obj: Any) -> dict:
    shape = tuple(int(x) for x in obj.get_shape())
    fmt = obj.get_memory_format()
    found = {"format": getattr(fmt, "name", str(fmt)), "dtype": obj.get_dtype()}
    if len(shape) == 4:
        found.update({"kv planes": shape[0], "layers": shape[1], "tokens": shape[2], "hidden size": shape[3]})
    return found


def short(engine: Any, obj: Any) -> bool:
    """Whether ``obj`` holds fewer tokens than a full chunk (then its token range must be checked)."""
    shape = getattr(getattr(engine, "metadata", None), "kv_shape", None)
    got = obj.get_shape()
    return shape is not None and len(shape) == 5 and len(got) == 4 and int(got[2]) < int(shape[2])


def check(engine: Any, obj: Any, span: tuple[int, int] | None) -> tuple[str, Any, Any] | None:
    """The first (cause, found, wanted) in which ``obj`` does not fit ``engine``'s KV cache, else None."""
    want = expected(engine)
    if want is None:
        return None
    got = _found(obj)
    for cause in ("format", "dtype", "kv planes", "layers", "hidden size"):
        if want[cause] is not None and cause in got and got[cause] != want[cause]:
            return cause, got[cause], want[cause]
    if span is not None and "tokens" in got and got["tokens"] < span[1] - span[0]:
        return "tokens", got["tokens"], span[1] - span[0]
    return None


def reject(engine: Any, key: Any, cause: str, got: Any, want: Any) -> None:
    """One WARNING per engine and cause; every rejection after that is counted, not logged."""
    warned = engine.__dict__.setdefault("_hpu_shim_guard_warned", {})
    warned[cause] = warned.get(cause, 0) + 1
    if warned[cause] > 1:
        return
    name = getattr(key, "to_string", lambda: str(key))()
    advice = CAUSES[cause].format(got=got, want=want, hint=_FORMAT_HINTS.get(str(got), ""))
    log.warning("LMCache chunk %s does not fit this KV cache (%s): %s. Treated as a miss: it and the chunks "
                "after it are recomputed. Compare `python -m hpu_shim doctor` on both nodes.", name, cause, advice)
