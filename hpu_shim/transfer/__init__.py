"""KV transfer between a paged KV cache (on an HPU, the CPU backend, or any torch device) and LMCache's memory objects.

Every connector the shim supplies (``hpu_shim.compat``) moves KV through this package. The API:

``cache = kv_cache(kvcaches, use_mla=False, block_size=None, hidden=None)``
    The paged cache as a :class:`KVCache` (layout table in ``layouts``), memoized on the identity
    of ``kvcaches``. ``block_size`` is needed only for flat layouts (default 128, vllm-gaudi's);
    ``hidden`` (heads x head size) is checked when given. Raises :class:`LayoutError`.
``validate(cache, slot_mapping, starts, ends, tensors=None) -> Chunks``
    Every host-side input check (chunk bounds, slot-mapping dtype/rank/length/device, memory-object
    shape/dtype/layers/device, and the slot values when the mapping is on the host). Connectors
    call it at their entry points; ``store``/``retrieve`` call it too. Raises
    :class:`TransferInputError` (a ``ValueError``) naming what was wrong and what was expected.
``store(cache, slot_mapping, starts, ends, outs) -> list``
    Paged KV -> ``outs[i][:, :, :ends[i] - starts[i]]`` (LMCache's ``KV_2LTD`` / ``KV_MLA_FMT``
    tensors ``[kv, L, >= n, hidden]`` on the host), returning those views. LMCache's
    ``batched_from_gpu``.
``retrieve(cache, srcs, slot_mapping, starts, ends) -> None``
    The reverse; LMCache's ``batched_to_gpu``. On bad input the cache is left exactly as it was.

``slot_mapping`` may be on the host or on the cache's device (LMCache's adapter moves it there): a
device mapping is never read on the host; block ids and the input verdict are derived on the device
(``planning``). Per batched call on an HPU: one device sync (a store's blocking device->host copy, a
retrieve's ``synchronize``), plus <= 2 ``mark_step`` in lazy mode and none in eager mode. Host
staging is bounded and reused (``staging``).

Modules: ``device`` (mode, index dtype, pinning), ``layouts``, ``validation``, ``planning``,
``staging``, ``kernels`` (gather/scatter). Gaudi facts they rely on: ``docs/gaudi-semantics.md``.
"""

from .kernels import retrieve, store
from .layouts import KVCache, LayoutError, kv_cache
from .planning import bucket
from .validation import Chunks, TransferInputError, validate

__all__ = [
           "Chunks",
           "KVCache",
           "LayoutError",
           "TransferInputError",
           "bucket",
           "kv_cache",
           "retrieve",
           "store",
           "validate",
]
