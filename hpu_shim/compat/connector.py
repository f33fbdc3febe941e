"""The shim's HPU connector for CUDA-only LMCache releases (0.3.x - 0.4.2).

Their ``VLLMPagedMemGPUConnectorV2`` asserts ``device.type == "cuda"`` and moves KV with the
compiled ``lmc_ops.multi_layer_kv_transfer`` over raw device pointers, which cannot exist on a
Gaudi. The shim substitutes a *subclass* of the release's own class, inside the scope only: the
constructor, ``from_metadata``, ``get_shape`` and the memory formats stay LMCache's, and only the
transfer methods are replaced by ``kv_transfer``'s batched HPU path. Connectors the shim cannot run
on HPU (layerwise, blending, V3, SGLang) are replaced by classes that fail at construction with a
clear error instead of a CUDA assertion deep inside a transfer.
"""

from __future__ import annotations

from typing import Any

from ..transfer import kv_transfer

__all__ = ["make_paged_connector", "make_unsupported_connector", "make_flat_aware_connector"]


def make_paged_connector(base: type, rt: Any, memory_format: Any) -> type:
    """A subclass of the release's ``VLLMPagedMemGPUConnectorV2`` that transfers with torch ops."""

    class HPUPagedMemConnectorV2(base):  # type: ignore[misc, valid-type]
        __doc__ = f"hpu_shim substitute for {base.__module__}.{base.__qualname__}: batched index_select/" \
                  f"index_copy_ on the device, <= 2 mark_step + 1 synchronize per batched call."
        __hpu_shim_substitute__ = f"{base.__module__}.{base.__qualname__}"

        def _layers(self) -> list:
            cached = getattr(self, "_hpu_shim_layers", None)
            if cached is not None and cached[0] is self.kvcaches:
                return cached[1]
            if self.kvcaches is None:
                raise ValueError("kvcaches should be provided in kwargs or initialized beforehand.")
            layout, layers = kv_transfer.normalize(self.kvcaches, getattr(self, "use_mla", False))
            self._hpu_shim_layers = (self.kvcaches, layers)
            self.hpu_shim_layout = layout
            self.device = layers[0][0].device
            return layers

        def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
            # Defined here because 0.3.1 - 0.3.2 have no such hook, and 0.4.3+'s permutes *tensors*,
            # which the layout normalisation below does not need.
            if "kvcaches" in kwargs:
                self.kvcaches = kwargs["kvcaches"]

        def _initialize_pointers(self, kv_caches: Any) -> None:  # no device pointers on HPU
            self.kvcaches = kv_caches
            self._layers()

        def _slot_mapping(self, kwargs: dict) -> Any:
            if "slot_mapping" not in kwargs:
                raise ValueError("'slot_mapping' should be provided in kwargs.")
            return kwargs["slot_mapping"]

        def _format(self) -> Any:
            fmt = memory_format
            return fmt.KV_MLA_FMT if getattr(self, "use_mla", False) else fmt.KV_2LTD

        def _check(self, memory_objs: list) -> None:
            want = self._format()
            for obj in memory_objs:
                if obj.tensor is None:
                    raise AssertionError("memory object has no tensor")
                if obj.metadata.fmt != want:
                    raise ValueError(f"The memory object should be in {want.name} format in order to be "
                                     f"processed by {type(self).__name__}, got {obj.metadata.fmt}")

        def _vllm_cpu_layers(self) -> list | None:
            """vLLM's CPU build hands over its own layout (see ``cpu_connector``); only with the cpu backend."""
            if rt.backend is None or rt.backend.name != "cpu" or getattr(self, "use_mla", False):
                return None
            cached = getattr(self, "_hpu_shim_cpu_layers", None)
            if cached is None or cached[0] is not self.kvcaches:
                from .cpu_connector import vllm_cpu_layers

                cached = (self.kvcaches, vllm_cpu_layers(self.kvcaches, self.hidden_dim_size))
                self._hpu_shim_cpu_layers = cached
            return cached[1]

        def batched_from_gpu(self, memory_objs, starts, ends, **kwargs):
            memory_objs = list(memory_objs)
            if not memory_objs:
                return
            self.initialize_kvcaches_ptr(**kwargs)
            cpu_layers = self._vllm_cpu_layers()
            if cpu_layers is not None:
                from .cpu_connector import gather_chunks

                gather_chunks(cpu_layers, memory_objs, starts, ends, self._slot_mapping(kwargs))
                for obj in memory_objs:
                    obj.metadata.fmt = self._format()
                return
            layers = self._layers()
            # Straight into LMCache's memory objects: no intermediate result to allocate and copy.
            kv_transfer.gather(layers, self._slot_mapping(kwargs), starts, ends, rt.backend.mark_step,
                               out=[obj.tensor for obj in memory_objs])
            for obj in memory_objs:
                obj.metadata.fmt = self._format()

        def batched_to_gpu(self, memory_objs, starts, ends, **kwargs):
            memory_objs = list(memory_objs)
            if not memory_objs:
                return
            self.initialize_kvcaches_ptr(**kwargs)
            self._check(memory_objs)
            cpu_layers = self._vllm_cpu_layers()
            if cpu_layers is not None:
                from .cpu_connector import scatter_chunks

                scatter_chunks(cpu_layers, memory_objs, starts, ends, self._slot_mapping(kwargs))
                return
            kv_transfer.scatter(self._layers(), [obj.tensor for obj in memory_objs], self._slot_mapping(kwargs),
                                starts, ends, rt.backend.mark_step, _device_synchronize(rt))

        def from_gpu(self, memory_obj, start, end, **kwargs):
            self.batched_from_gpu([memory_obj], [start], [end], **kwargs)

        def to_gpu(self, memory_obj, start, end, **kwargs):
            self.batched_to_gpu([memory_obj], [start], [end], **kwargs)

    HPUPagedMemConnectorV2.__name__ = HPUPagedMemConnectorV2.__qualname__ = base.__name__
    HPUPagedMemConnectorV2.__module__ = base.__module__
    return HPUPagedMemConnectorV2


def _device_synchronize(rt: Any):
    """Wait for the device without a second mark_step (the scatter already issued one)."""
    if rt.backend.name == "hpu":
        import torch

        return torch.hpu.synchronize
    return lambda: None


def make_unsupported_connector(base: type, release: str, why: str, fix: str) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{base.__qualname__} (LMCache {release}) cannot run on HPU through hpu_shim: {why}. {fix}"
        )

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__,
                                         "__hpu_shim_substitute__": f"unsupported {base.__qualname__}"})


class KVPair(tuple):
    """A per-layer ``(K, V)`` that also answers ``.device``/``.dtype``/``.shape`` like vllm-gaudi's
    ``TensorTuple`` (``hpu_ecosystem.md`` A7), which LMCache's HPU connector reads."""

    @property
    def device(self) -> Any:
        return self[0].device

    @property
    def dtype(self) -> Any:
        return self[0].dtype

    @property
    def shape(self) -> tuple:
        return (2, *self[0].shape)


def _as_four_d(kvcaches: Any) -> list:
    """Per-layer ``(K, V[, scales...])``: flat ``[rows, H, D]`` -> ``[rows, 1, H, D]`` views; 4-D kept."""
    out = []
    for layer in kvcaches:
        k, v = layer[0], layer[1]
        if k.dim() == 3:
            k, v = k.view(k.shape[0], 1, *k.shape[1:]), v.view(v.shape[0], 1, *v.shape[1:])
        elif hasattr(layer, "device") and len(layer) == 2:
            out.append(layer)  # already a TensorTuple
            continue
        out.append(KVPair((k, v)))
    return out


def make_flat_aware_connector(base: type) -> type:
    """LMCache's own HPU connector with two Gaudi fixes to how it takes the KV cache.

    * vllm-gaudi's flat ``[NB*BS, H, D]`` (K, V) layout is viewed as ``[NB*BS, 1, H, D]``;
    * per-layer ``(K, V)`` tuples are stored as given. 0.4.3 - 0.4.4 inherit an
      ``initialize_kvcaches_ptr`` that permutes *tensors* and crashes on tuples
      (``'tuple' object has no attribute 'is_contiguous'``); later releases override it
      exactly this way, so this backports their fix.
    """

    def initialize_kvcaches_ptr(self, **kwargs: Any) -> None:
        if "kvcaches" not in kwargs:
            return
        raw = kwargs["kvcaches"]
        if raw and isinstance(raw[0], (tuple, list)):
            cached = getattr(self, "_hpu_shim_kv", None)
            if cached is None or cached[0] is not raw:
                cached = (raw, _as_four_d(raw))
                self._hpu_shim_kv = cached
            self.kvcaches = cached[1]
        else:
            base.initialize_kvcaches_ptr(self, **kwargs)

    return type(base.__name__, (base,), {"initialize_kvcaches_ptr": initialize_kvcaches_ptr,
                                         "__module__": base.__module__, "__qualname__": base.__qualname__,
                                         "__doc__": base.__doc__,
                                         "__hpu_shim_substitute__": f"{base.__qualname__} + layout fixes"})
