"""What vllm-gaudi hands to KV connectors, reproduced for tests (docs/gaudi-semantics.md "vllm-gaudi KV layout").

Since vllm-gaudi 0.11.2 (#411) ``register_kv_caches`` receives, per layer, a ``TensorTuple``:
a ``tuple`` subclass of ``(K, V)`` 4-D views ``[num_blocks, block_size, H, D]`` whose ``.shape``
is ``(2, nb, bs, H, D)`` and whose ``.device``/``.dtype``/``data_ptr()``/``untyped_storage()`` come
from the first tensor. Before that, connectors got the raw 4-tuple ``(K, V, k_scales, v_scales)``
of flat ``[(nb+1)*bs, H, D]`` caches.
"""

from __future__ import annotations


from ..compat.connector import TensorTuple

__all__ = ["TensorTuple"]
