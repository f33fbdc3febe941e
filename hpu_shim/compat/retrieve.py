"""Partial retrieves inside LMCache: every token reported restored is really written, and only those.

A retrieve fetches the looked-up chunks from the store; a chunk can still fail between lookup and
retrieve (file deleted or truncated, damaged header, server gone) or be rejected by the shape guards
(``hpu_shim.compat.guards``). LMCache then keeps the prefix before the first failed chunk and reports
the rest as not retrieved, so vLLM recomputes it. LMCache 0.3.x - 0.4.x get the prefix wrong
(``LMCacheEngine._process_tokens_internal``): the chunk *right before* the failure is dropped from
the transfer (``end < last_failed_block_start`` instead of ``<=``) but still reported as retrieved, so
0.3.7 reports 256 tokens restored after a truncated second chunk and never writes chunk 0 -- the
decode node then attends over whatever its KV cache held. Those releases also pick the *last*
failure across storage locations instead of the first, and leak the memory objects they drop.
LMCache 0.5.x fixed it upstream.

Two fix-ups, registered in ``hpu_shim.compat`` for every release:

* ``fix_storage_manager``: while a retrieve runs on this thread, ``StorageManager.batched_get``
  records what it fetched and hands every chunk to the shape guards first; a rejected chunk is
  released and returned as a failed fetch (``None``).
* ``fix_cache_engine``: ``_process_tokens_internal`` runs with that recording on; where the release
  has the off-by-one (detected in its source), the result is rebuilt from the recording: the prefix
  up to the first failure is transferred and reported, every other fetched object is released.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

from . import guards

__all__ = ["has_off_by_one", "fix_storage_manager", "fix_cache_engine", "rebuild"]

log = logging.getLogger("hpu_shim")
_tls = threading.local()

#: The upstream line that drops the chunk right before a failure (LMCache 0.3.x - 0.4.x).
OFF_BY_ONE = "end < last_failed_block_start"


class _Retrieve:
    """One ``_process_tokens_internal`` call: the engine, its chunk spans and every fetch it made.

    The spans (key -> token range) cost a second pass of LMCache's token hashing, so they are only
    computed when needed: a chunk shorter than the chunk size, or a failure to rebuild around."""

    def __init__(self, engine: Any, tokens: Any, mask: Any, kwargs: dict):
        self.engine, self._args, self._spans = engine, (tokens, mask, kwargs), None
        self.fetches: list[tuple[list, list]] = []  # (keys, objects) per batched_get, in call order

    @property
    def spans(self) -> dict:
        if self._spans is None:
            self._spans = _spans(self.engine, *self._args)
        return self._spans


def has_off_by_one(func: Any) -> bool:
    """Whether ``func`` (a release's ``_process_tokens_internal``) carries the upstream off-by-one."""
    try:
        return OFF_BY_ONE in inspect.getsource(func)
    except (OSError, TypeError):
        return False


def _spans(engine: Any, tokens: Any, mask: Any, kwargs: dict) -> dict:
    """key -> (start, end) for this retrieve's chunks, as LMCache's own token database cuts them."""
    try:
        chunks = engine.token_database.process_tokens(tokens=tokens, mask=mask,
                                                      request_configs=kwargs.get("request_configs"))
        return {key: (start, end) for start, end, key in chunks}
    except Exception as exc:  # never break a retrieve over the bookkeeping
        log.debug("hpu_shim: could not compute chunk spans (%s); token-count guard off for this retrieve", exc)
        return {}


def fix_storage_manager(module: Any, ctx: Any) -> None:
    """``StorageManager.batched_get`` guards and records fetches made during a retrieve."""
    manager = getattr(module, "StorageManager", None)
    original = manager.__dict__.get("batched_get") if isinstance(manager, type) else None
    if original is None:
        return

    def batched_get(self: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
        objs = original(self, keys, *args, **kwargs)
        current = getattr(_tls, "retrieve", None)
        if current is None or objs is None:
            return objs
        keys, objs = list(keys), list(objs)
        for i, (key, obj) in enumerate(zip(keys, objs)):
            if obj is None:
                continue
            verdict = guards.check(current.engine, obj, None)
            if verdict is None and guards.short(current.engine, obj):  # only then is the token range needed
                verdict = guards.check(current.engine, obj, current.spans.get(key))
            if verdict is not None:
                guards.reject(current.engine, key, *verdict)
                obj.ref_count_down()
                objs[i] = None
        current.fetches.append((keys, objs))
        return objs

    batched_get.__wrapped__ = original  # type: ignore[attr-defined]
    batched_get.__doc__ = "hpu_shim: during a retrieve, shape-guarded and recorded (hpu_shim.compat.retrieve)."
    ctx.patches.patch(manager, "batched_get", batched_get)


def rebuild(current: _Retrieve, ret_mask: Any, result: Any) -> tuple[list, int]:
    """The prefix up to the first failed fetch, from the recording; releases every other object.

    ``result`` is what the buggy release returned; objects in it that are not kept are released
    here (the caller only releases what it is handed back), as is everything it dropped.
    """
    if all(obj is not None for _, objs in current.fetches for obj in objs):
        return result  # nothing failed: the release's answer is right (and no second hashing pass)
    first_fail = None
    good: list[tuple[Any, Any, int, int]] = []
    for keys, objs in current.fetches:
        for key, obj in zip(keys, objs):
            span = current.spans.get(key)
            if span is None:  # a chunk we cannot place: keep LMCache's own answer
                return result
            if obj is None:
                first_fail = span[0] if first_fail is None else min(first_fail, span[0])
                break
            good.append((key, obj, *span))
    if first_fail is None:
        return result
    kept = [chunk for chunk in good if chunk[3] <= first_fail]
    kept_ids = {id(chunk[1]) for chunk in kept}
    for keys, objs in current.fetches:
        for obj in objs:
            if obj is not None and id(obj) not in kept_ids:
                obj.ref_count_down()
    ret_mask[first_fail:] = False
    for _, _, start, end in kept:
        ret_mask[start:end] = True
    return kept, sum(obj.get_size() for _, obj, _, _ in kept)


def fix_cache_engine(module: Any, ctx: Any) -> None:
    """``LMCacheEngine._process_tokens_internal`` records its fetches; the off-by-one is corrected."""
    engine_cls = getattr(module, "LMCacheEngine", None)
    original = engine_cls.__dict__.get("_process_tokens_internal") if isinstance(engine_cls, type) else None
    if original is None:
        return
    buggy = has_off_by_one(original)

    def _process_tokens_internal(self: Any, tokens: Any, mask: Any, ret_mask: Any, **kwargs: Any) -> Any:
        current = _Retrieve(self, tokens, mask, kwargs)
        previous = getattr(_tls, "retrieve", None)
        _tls.retrieve = current
        try:
            result = original(self, tokens, mask, ret_mask, **kwargs)
        finally:
            _tls.retrieve = previous
        return rebuild(current, ret_mask, result) if buggy else result

    _process_tokens_internal.__wrapped__ = original  # type: ignore[attr-defined]
    _process_tokens_internal.__doc__ = ("hpu_shim: shape-guarded fetches" +
                                        ("; keeps the prefix up to the first failed chunk (upstream off-by-one "
                                         "fixed)" if buggy else ""))
    ctx.patches.patch(engine_cls, "_process_tokens_internal", _process_tokens_internal)
