"""The emulated ``hpu`` device: a wrapper tensor subclass plus PrivateUse1 kernels.

Why this design: stock CPU torch cannot allocate real PrivateUse1 storage from Python,
so an ``HPUTensor`` is a ``_make_wrapper_subclass`` tensor whose metadata says
``device='hpu:0'`` and which holds a *host* tensor (``_host``) with identical
sizes/strides/offset.  ``__torch_dispatch__`` runs every aten op on the host tensors
and re-wraps the results, so views alias (they share the host storage) and in-place
ops write through.  Factories reach the ``PrivateUse1`` kernels registered here.
Wrappers use ``dispatch_sizes_strides_policy="sizes"``: sizes/strides are read from the
host tensor on demand, so ``resize_`` and ``out=`` ops (e.g. ``arange``) stay correct.

Fidelity decisions (each a section of docs/gaudi-semantics.md):
* Devices: one device per process; ``hpu:N`` with N > 0 fails the bridge's device guard.
* Mixing host and device tensors in one op raises like a real device backend; 0-dim
  CPU tensors are allowed (as on CUDA).  Index arguments: ``index_select``,
  ``index_copy_``, ``index_add_``, ``gather``, ``scatter`` ... require the index on the
  device (CUDA raises there too); only advanced indexing (``aten::index``,
  ``aten::index_put_``: ``x[idx]``, ``x[idx] = v``) accepts host indices, because
  CUDA/XLA copy those indices to the device.
* CPU fallback: an op with no HPU kernel in the bridge's list (``_ops``) runs on the host the way the
  bridge's boxed fallback does (inputs to the host, results back), counted, or raises under
  ``PT_HPU_PLACE_ON_CPU``.
* int64 / Dtypes: Long held as int32 without PT_ENABLE_INT64_SUPPORT, float64 held as float32,
  complex refused (``_dtypes``).
* Pinned memory and copies: every host<->device copy is counted with what it costs on Gaudi
  (bounce buffer, host memcpy, blocking); ``_pinned`` keeps the pinned allocations.
* Execution modes: lazy mode adds every op to the pending graph with the bridge's key (``_lazy``),
  device->host reads flush it; eager mode counts per-op compile keys.  Every launch (graph, eager
  kernel, DMA) is numbered so that event and stream queries can see work in flight.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.utils._pytree import tree_map

from . import _counters, _dtypes, _lazy, _ops, _pinned, _profile, _torch_hpu
from ._memory import TRACKER
from ._torch_hpu import HPU_GENERATOR

aten = torch.ops.aten
_CPU = torch.device("cpu")
_HPU: torch.device | None = None  # set by register(); only valid after the rename
_ALL = frozenset({"*"})

#: Ops that move data between host and device: host tensors of any rank are fine.
_TRANSFER_OPS = frozenset({
    "aten::copy_", "aten::copy", "aten::_copy_from", "aten::_copy_from_and_resize",
    "aten::_to_copy", "aten::lift_fresh", "aten::lift", "aten::lift_fresh_copy",
})
#: Ops whose named arguments may stay on the host (advanced indexing, as on CUDA).
_HOST_ARGS_OK: dict[str, frozenset] = {
    "aten::index": frozenset({"indices"}),
    "aten::_unsafe_index": frozenset({"indices"}),
    "aten::index_put": frozenset({"indices"}),
    "aten::index_put_": frozenset({"indices"}),
    "aten::_index_put_impl_": frozenset({"indices"}),
    "aten::_unsafe_index_put": frozenset({"indices"}),
}
#: Ops whose result is read on the host: they complete the device work (lazy flush).
#: Value: does the op move the tensor's bytes to the host (counted as d2h)?
_HOST_READ_OPS: dict[str, bool] = {
    "aten::_local_scalar_dense": True,  # .item(), bool(t), int(t)
    "aten::equal": False,
    "aten::allclose": False,
    "aten::is_nonzero": False,
}
#: Metadata queries: answered from the host tensor (sizes are live, see HPUTensor), not
#: counted as device ops and not part of lazy graphs.
_METADATA_OPS = frozenset({
    "aten::dim", "aten::size", "aten::sym_size", "aten::stride", "aten::sym_stride",
    "aten::numel", "aten::sym_numel", "aten::storage_offset", "aten::sym_storage_offset",
    "aten::is_contiguous", "aten::is_strides_like_format", "aten::is_non_overlapping_and_dense",
    "aten::is_pinned", "aten::is_same_size", "aten::_has_compatible_shallow_copy_type",
})
#: (dst index, src index) of copy ops, to classify h2d / d2h transfers.
_COPY_ARGS: dict[str, tuple[int, int]] = {
    "aten::copy_": (0, 1), "aten::copy": (0, 1),
    "aten::_copy_from": (1, 0), "aten::_copy_from_and_resize": (1, 0),
}
#: Conversions whose ``device`` argument may move data to the host (d2h).
_TO_OPS = frozenset({"aten::_to_copy", "aten::to"})



class HPUTensor(torch.Tensor):
    """A tensor on the emulated ``hpu:0``; data lives in ``self._host`` (a CPU tensor)."""

    _host: torch.Tensor
    # No torch_function subclass propagation: results are decided in __torch_dispatch__.
    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return dispatch(func, args, kwargs or {})

    # -- host-visible behaviour a device tensor has ---------------------------------
    def data_ptr(self) -> int:
        """Address of the first element: stable, distinct per storage, view offsets apply."""
        return self._host.data_ptr()

    def untyped_storage(self) -> HPUStorage:
        """The device storage: shared by views, same ``data_ptr``/``nbytes`` as on a device."""
        return HPUStorage(self._host.untyped_storage())

    def storage(self):
        raise RuntimeError(
            "TypedStorage (Tensor.storage()) of emulated hpu tensors is not supported; "
            "use Tensor.untyped_storage()"
        )

    _typed_storage = storage

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            with torch.no_grad():
                copy = self.clone()
            memo[id(self)] = copy.requires_grad_(self.requires_grad)
        return memo[id(self)]

    def __reduce_ex__(self, protocol):
        """Pickle/torch.save through a host copy (a counted d2h); loading needs the emulator."""
        return _rebuild_on_hpu, (self.detach().cpu(), self.requires_grad)

    def tolist(self):
        return self.cpu().tolist()  # a real device->host transfer (counted)

    def numpy(self, *, force: bool = False):
        raise TypeError(
            f"can't convert {self.device} device type tensor to numpy. "
            "Use Tensor.cpu() to copy the tensor to host memory first."
        )

    def __repr__(self, *, tensor_contents=None) -> str:
        text = repr(self.cpu())  # printing reads the device: a counted d2h, flushes lazy graphs
        return f"{text[:-1]}, device='{self.device}')"


def _rebuild_on_hpu(host: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return host.to("hpu").requires_grad_(requires_grad)


class HPUStorage:
    """Stand-in for ``torch.UntypedStorage`` of an hpu tensor.

    Deliberately NOT an UntypedStorage: a real PrivateUse1 storage pointing at host
    memory makes torch's C++ storage ops (copy, deepcopy, repr) dereference it as device
    memory and segfault.  Exposes what device-agnostic code reads: ``data_ptr``,
    ``nbytes``, ``size``, ``device``; ``cpu()`` is a counted device->host copy.
    """

    __slots__ = ("_host",)

    def __init__(self, host: torch.UntypedStorage) -> None:
        self._host = host

    @property
    def device(self) -> torch.device:
        return _HPU

    is_cuda = False
    is_sparse = False

    def data_ptr(self) -> int:
        return self._host.data_ptr()

    def nbytes(self) -> int:
        return self._host.nbytes()

    def size(self) -> int:
        return self._host.size()

    __len__ = size

    def element_size(self) -> int:
        return 1

    def is_pinned(self, device=None) -> bool:
        return False

    def untyped(self) -> HPUStorage:
        return self

    def cpu(self) -> torch.UntypedStorage:
        out = torch.UntypedStorage(self.nbytes())
        out.copy_(self._host)
        _d2h(None, None, self.nbytes(), True)
        return out

    def tolist(self):
        return self.cpu().tolist()

    def __eq__(self, other) -> bool:
        return isinstance(other, HPUStorage) and other.data_ptr() == self.data_ptr() and other.nbytes() == self.nbytes()

    def __hash__(self) -> int:
        return hash((self.data_ptr(), self.nbytes()))

    def __repr__(self) -> str:
        return f"<UntypedStorage(device=hpu:0) of {self.nbytes()} bytes at {self.data_ptr():#x} (emulated)>"


# -- op metadata cache -------------------------------------------------------------------
class _OpInfo(NamedTuple):
    name: str                 # schema name, e.g. "aten::index_select"
    label: str                # overload, e.g. "aten.index_select.default"
    arg_names: tuple[str, ...]
    mutable: bool
    generator_index: int | None
    device_index: int | None   # position of a `device` argument (factories, to, _to_copy)
    metadata: bool
    host_ok: frozenset
    view: bool                # returns an alias of an input and writes nothing (no kernel runs)
    row: _ops.OpRow | None  # its line in the bridge's op list for this mode; None: no HPU kernel
    scalar_inputs: tuple[int, ...]  # args that are graph inputs when a number: scalar_ids + wrapped numbers
    written: tuple[int, ...]  # positions of arguments the op writes (in-place self, out=)
    composite: bool           # torch decomposes it on any backend: no kernel of its own needed


_OP_INFO: dict[Any, _OpInfo] = {}


def _op_info(func) -> _OpInfo:
    info = _OP_INFO.get(func)
    if info is None:
        schema = func._schema
        names = tuple(a.name for a in schema.arguments)
        gen = names.index("generator") if "generator" in names else None
        dev = names.index("device") if "device" in names else None
        host_ok = _ALL if schema.name in _TRANSFER_OPS else _HOST_ARGS_OK.get(schema.name, frozenset())
        view = (not schema.is_mutable and bool(schema.returns)
                and all(r.alias_info is not None for r in schema.returns))
        row = _ops.row_for(schema, _lazy.is_lazy())
        # A Python number where the schema wants a Tensor is a wrapped number: a 0-dim host tensor
        # the bridge copies to the device as a graph input.
        wrapped = {i for i, a in enumerate(schema.arguments) if isinstance(a.type, torch.TensorType)}
        scalar_inputs = tuple(sorted(wrapped | set(_ops.scalar_input_positions(row))))
        written = tuple(i for i, a in enumerate(schema.arguments)
                        if a.alias_info is not None and a.alias_info.is_write)
        info = _OpInfo(schema.name, str(func), names, schema.is_mutable, gen, dev,
                       schema.name in _METADATA_OPS, host_ok, view, row, scalar_inputs, written,
                       schema.name in _METADATA_OPS or _ops.is_composite(schema))
        _OP_INFO[func] = info
    return info


# -- helpers -----------------------------------------------------------------------------
def device_index_error(index: int) -> RuntimeError:
    """The bridge's DeviceGuard check (HPUGuardImpl.h, exchangeDevice), plus what to do instead."""
    return RuntimeError(
        f"habana active device: {index} != 0 [emulated HPU: one device per process, the guard only "
        "accepts device 0; use 'hpu' or 'hpu:0' (docs/gaudi-semantics.md, Devices)]")


def _hpu_device(device) -> torch.device:
    """Validate a device argument: one device per process, index 0 (docs/gaudi-semantics.md, Devices)."""
    dev = torch.device(device) if device is not None else _HPU
    if dev.type != "hpu":
        raise RuntimeError(f"Invalid device {dev} for an hpu kernel [emulated HPU]")
    if dev.index not in (None, 0):
        raise device_index_error(dev.index)
    return _HPU


def _named_tensors(info: _OpInfo, args, kwargs):
    for name, value in list(zip(info.arg_names, args)) + list(kwargs.items()):
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, torch.Tensor):
                    yield name, item


def _check_devices(info: _OpInfo, args, kwargs) -> None:
    if info.host_ok is _ALL:
        return
    for name, t in _named_tensors(info, args, kwargs):
        if isinstance(t, HPUTensor):
            continue
        if t.device.type == "cpu" and (t.dim() == 0 or name in info.host_ok):
            continue  # CPU scalars / host index lists are accepted, as on CUDA
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, "
            f"{_HPU} and {t.device}! (when checking argument for argument {name} in method "
            f"{info.label}) [emulated HPU]"
        )


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _node_of(value) -> tuple | None:
    """What a lazy graph key keeps of a tensor argument: rank/shape, dtype and where it comes from."""
    if isinstance(value, HPUTensor):
        node = getattr(value, "_lazy_node", None)
        source = node[1] if node is not None and node[0] == _counters.graph_epoch() else "input"
        return ("hpu", tuple(value._host.shape), str(value.dtype), source)  # host sizes: no dispatch
    if isinstance(value, torch.Tensor):
        return ("host", tuple(value.shape), str(value.dtype))
    return None


def _tensors(args, kwargs) -> list:
    found = []
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


#: Ops that only allocate: no kernel is compiled for them in eager mode.
_ALLOCATION_OPS = frozenset({"aten::empty", "aten::empty_strided", "aten::resize_"})


def _note_op(info: _OpInfo, args, kwargs, transfer: bool = False) -> int | None:
    """Count one dispatch; lazy: add it to the pending graph (returns its index); eager: compile key."""
    _counters.bump("hpu_ops")
    if _lazy.is_lazy():
        return _counters.record_op(_lazy.graph_item(info.label, tuple(args), kwargs, _node_of,
                                                    info.scalar_inputs))
    if not (transfer or info.view or info.name in _ALLOCATION_OPS):
        tensors = [t._host if isinstance(t, HPUTensor) else t for t in _tensors(args, kwargs)]
        _counters.eager_compile(_lazy.eager_key(info.label, tensors))
        _counters.launch()  # eager: the kernel is queued at once
    return None


def _mark_produced(out, index: int | None, epoch: int) -> None:
    """Lazy mode: remember which pending op produced each hpu result (graph topology in the key)."""
    if index is None or epoch != _counters.graph_epoch():
        return
    for t in out if isinstance(out, (list, tuple)) else (out,):
        if isinstance(t, HPUTensor):
            t._lazy_node = (epoch, index)


def _non_blocking(info: _OpInfo, args, kwargs) -> bool:
    if "non_blocking" in kwargs:
        return bool(kwargs["non_blocking"])
    i = info.arg_names.index("non_blocking") if "non_blocking" in info.arg_names else None
    return bool(args[i]) if i is not None and i < len(args) else False


def _h2d(src: torch.Tensor) -> None:
    """Count one host->device copy of ``src`` (docs/gaudi-semantics.md, Pinned memory and copies)."""
    _counters.bump("h2d_bytes", _nbytes(src))
    _counters.bump("h2d_copies")
    staged, staged_is_src = _dtypes.h2d(src)  # a host cast makes a new (unpinned) host tensor
    if staged_is_src and not src.is_contiguous():  # the bridge makes a strided source contiguous first
        _counters.bump("host_memcpy_bytes", staged)
        staged_is_src = False
    _pinned.account_h2d(src, staged, staged_is_src)
    _counters.launch()  # the DMA is queued on the device


def _d2h(src: torch.Tensor | None, dst: torch.Tensor | None, nbytes: int, blocking: bool) -> None:
    """Count one device->host copy of ``src`` into ``dst`` (None: a fresh host buffer, never pinned)."""
    _counters.bump("d2h_bytes", nbytes)
    _counters.bump("d2h_copies")
    staged, forced = _dtypes.d2h(src) if src is not None else (nbytes, False)
    blocking = blocking or forced
    if dst is None:
        if blocking:
            _counters.bump("blocking_d2h_copies")
        _counters.bump("bounce_buffer_bytes", staged)
        _counters.bump("host_memcpy_bytes", staged)
    else:
        _pinned.account_d2h(dst, staged, blocking)
    _lazy.implicit_flush()
    if blocking:  # waits for its data, i.e. for the in-order queue before it
        _counters.finish()
    else:
        _counters.launch()


def _account_transfer(info: _OpInfo, args, kwargs, out_on_hpu: bool, out) -> None:
    """Count h2d/d2h copies, bytes and staging; any read on the host flushes the lazy graph."""
    if info.name in _COPY_ARGS:
        dst_i, src_i = _COPY_ARGS[info.name]
        dst, src = args[dst_i], args[src_i]
        if isinstance(dst, HPUTensor) and not isinstance(src, HPUTensor):
            _h2d(src)
        elif isinstance(src, HPUTensor) and not isinstance(dst, HPUTensor):
            _d2h(src, dst, _nbytes(src), not _non_blocking(info, args, kwargs))
            _dtypes.after_d2h(src, dst)
    elif info.name in _TO_OPS and not out_on_hpu:
        dst = out if isinstance(out, torch.Tensor) else None
        _d2h(args[0], dst, _nbytes(args[0]), not _non_blocking(info, args, kwargs))
        _dtypes.after_d2h(args[0], dst)
    elif info.name in _HOST_READ_OPS:
        if not _HOST_READ_OPS[info.name]:
            _lazy.implicit_flush()  # a bool result reaches the host, no tensor copy
            _counters.finish()
            return
        _d2h(None, None, args[0].element_size(), True)


def wrap(host: torch.Tensor) -> HPUTensor:
    """Make the hpu wrapper for a host tensor and account its storage as device memory."""
    _dtypes.check_device_dtype(host.dtype)
    TRACKER.track(host.untyped_storage())
    if torch.is_inference_mode_enabled():
        # Wrappers must not be inference tensors, or views of them fail
        # ("Cannot set version_counter for inference tensor").
        with torch.inference_mode(False):
            return _make_wrapper(host)
    return _make_wrapper(host)


def _make_wrapper(host: torch.Tensor) -> HPUTensor:
    t = torch.Tensor._make_wrapper_subclass(
        HPUTensor, host.size(), strides=host.stride(), storage_offset=host.storage_offset(),
        dtype=host.dtype, layout=host.layout, device=_HPU, requires_grad=False,
        dispatch_sizes_strides_policy="sizes",
    )
    t._host = host
    return t


def host_of(t: torch.Tensor) -> torch.Tensor:
    """The host tensor behind an hpu tensor (test helper: reads without counting)."""
    if not isinstance(t, HPUTensor):
        raise TypeError(f"not an emulated hpu tensor: {type(t).__name__} on {t.device}")
    return t._host


# -- the dispatcher --------------------------------------------------------------------
def dispatch(func, args, kwargs):
    """Run ``func`` on host tensors, then re-wrap results that live on the device."""
    info = _op_info(func)
    if info.metadata:
        return func(*[a._host if isinstance(a, HPUTensor) else a for a in args], **kwargs)
    _check_devices(info, args, kwargs)
    fallback = _ops.falls_back(info.row, info.composite, args, kwargs, _lazy.is_lazy())
    if fallback:
        _enter_cpu_fallback(info, args, kwargs)

    wrappers: dict[int, HPUTensor] = {}
    passthrough = set()

    def unwrap(x):
        if isinstance(x, HPUTensor):
            wrappers[id(x._host)] = x
            return x._host
        if isinstance(x, torch.Tensor):
            if x.device.type == "hpu":  # a PrivateUse1 tensor not made by the emulator
                raise RuntimeError("hpu tensor without emulator backing (created outside hpu_shim.testing)")
            passthrough.add(id(x))
        return x

    host_args = list(tree_map(unwrap, tuple(args)))
    host_kwargs = tree_map(unwrap, dict(kwargs))
    out_on_hpu = _retarget_device(info, host_args, host_kwargs)
    if out_on_hpu and kwargs.get("pin_memory"):
        raise RuntimeError(_pinned.DEVICE_PIN_ERROR)
    if info.generator_index is not None:
        _use_hpu_generator(info.generator_index, host_args, host_kwargs)

    transfer = info.host_ok is _ALL and (not out_on_hpu or bool(passthrough))
    if transfer and info.name in _COPY_ARGS:  # the bridge checks a host cast before it copies
        dst, src = (args[i] for i in _COPY_ARGS[info.name])
        if isinstance(dst, HPUTensor) and not isinstance(src, HPUTensor):
            _dtypes.check_h2d(src)
    epoch = _counters.graph_epoch()
    index = None if fallback else _note_op(info, args, kwargs, transfer)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        out = func(*host_args, **host_kwargs)
    _account_transfer(info, args, kwargs, out_on_hpu, out)
    if info.mutable:  # resize_ / out= may have grown a storage in place
        for w in wrappers.values():
            TRACKER.resized(w._host.untyped_storage())

    def rewrap(x):
        if not isinstance(x, torch.Tensor):
            return x
        if id(x) in passthrough:
            return x
        if not out_on_hpu:  # result requested on the host: never alias device memory
            ptr = x.untyped_storage().data_ptr()
            aliased = any(w._host.untyped_storage().data_ptr() == ptr for w in wrappers.values())
            return x.clone() if aliased and ptr else x
        if id(x) in wrappers:  # in-place / out= result: the caller's own hpu tensor
            return wrappers[id(x)]
        return wrap(x)

    result = tree_map(rewrap, out)
    if out_on_hpu and not info.view:
        _after_device_write(info, args, result, count=not transfer)
    if fallback:
        _leave_cpu_fallback(info, args, result)
    _mark_produced(result, index, epoch)
    return result


def _written_hpu_tensors(info: _OpInfo, args, result) -> list:
    found = [t for t in (result if isinstance(result, (list, tuple)) else (result,)) if isinstance(t, HPUTensor)]
    if info.mutable:
        found += [args[i] for i in info.written if i < len(args) and isinstance(args[i], HPUTensor)]
    unique = {id(t): t for t in found}
    return list(unique.values())


def _enter_cpu_fallback(info: _OpInfo, args, kwargs) -> None:
    """The bridge's boxed CPU fallback, first half: allowed? then every device input goes to the host."""
    name = _ops.op_name(info)
    allowed = _profile.current().place_on_cpu
    if allowed is not None and name not in allowed:
        raise RuntimeError(_ops.not_supported_message(name))
    _counters.bump("cpu_fallbacks")
    _counters.bump("hpu_ops")
    for t in _tensors(args, kwargs):
        if isinstance(t, HPUTensor):
            _d2h(t, None, _nbytes(t), True)  # at::_to_cpu: blocking copies into fresh host tensors


def _leave_cpu_fallback(info: _OpInfo, args, result) -> None:
    """Second half: results and written inputs go back to the device."""
    for t in _written_hpu_tensors(info, args, result):
        _h2d(t._host)


def _after_device_write(info: _OpInfo, args, result, count: bool) -> None:
    """Apply the device's storage dtype to every hpu tensor the op wrote (docs/gaudi-semantics.md, int64)."""
    for t in _written_hpu_tensors(info, args, result):
        _dtypes.after_op(t._host, count)


def _retarget_device(info: _OpInfo, host_args: list, host_kwargs: dict) -> bool:
    """Swap an explicit hpu ``device`` argument for cpu; return whether outputs live on hpu."""
    i = info.device_index
    if i is None:
        return True
    positional = i < len(host_args)
    target = host_args[i] if positional else host_kwargs.get("device")
    if target is None:
        return True
    target = torch.device(target)
    if target.type != "hpu":
        return False
    _hpu_device(target)
    if positional:
        host_args[i] = _CPU
    else:
        host_kwargs["device"] = _CPU
    return True


def _use_hpu_generator(index: int, args: list, kwargs: dict) -> None:
    """Random ops on hpu draw from torch.hpu's generator (seeded by torch.hpu.manual_seed)."""
    if index < len(args):
        if args[index] is None:
            args[index] = HPU_GENERATOR
    elif kwargs.get("generator") is None:
        kwargs["generator"] = HPU_GENERATOR


# -- PrivateUse1 kernels (reached by factories and Python-key-excluded paths) -----------------
def _factory(make_host, device, pin_memory, nbytes: int, op, args: tuple, kwargs: dict):
    _hpu_device(device)
    if pin_memory:
        raise RuntimeError(_pinned.DEVICE_PIN_ERROR)
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    _dtypes.check_device_dtype(dtype)
    TRACKER.check(nbytes)
    _torch_hpu.mark_initialized()
    epoch = _counters.graph_epoch()
    index = _note_op(_op_info(op), args, kwargs)
    out = wrap(make_host())
    _mark_produced(out, index, epoch)
    return out


def _empty_memory_format(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    dtype = dtype or torch.get_default_dtype()
    numel = 1
    for s in size:
        numel *= s
    nbytes = numel * dtype.itemsize
    return _factory(
        lambda: torch.empty(size, dtype=dtype, layout=layout,
                            memory_format=memory_format or torch.contiguous_format),
        device, pin_memory, nbytes, aten.empty.memory_format, (tuple(size),),
        {"dtype": dtype, "memory_format": memory_format})


def _empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
    dtype = dtype or torch.get_default_dtype()
    extent = 1 + sum((sz - 1) * st for sz, st in zip(size, stride)) if all(size) else 0
    nbytes = extent * dtype.itemsize
    return _factory(lambda: torch.empty_strided(size, stride, dtype=dtype, layout=layout),
                    device, pin_memory, nbytes, aten.empty_strided.default, (tuple(size), tuple(stride)),
                    {"dtype": dtype})


def _copy_from(src, dst, non_blocking=False):
    dispatch(aten.copy_.default, (dst, src, non_blocking), {})
    return dst


def _copy_from_and_resize(src, dst):
    if not isinstance(dst, HPUTensor) and dst.shape != src.shape:
        dst.resize_(src.shape)
    return _copy_from(src, dst)


_LIBS = []


def register() -> None:
    """Register kernels; call once, right after PrivateUse1 was renamed to 'hpu'."""
    global _HPU
    if _LIBS:
        return
    _HPU = torch.device("hpu", 0)
    lib = torch.library.Library("aten", "IMPL")
    for name, fn in (
        ("empty.memory_format", _empty_memory_format),
        ("empty_strided", _empty_strided),
        ("_copy_from", _copy_from),
        ("_copy_from_and_resize", _copy_from_and_resize),
    ):
        lib.impl(name, fn, "PrivateUse1")
    _LIBS.append(lib)
    # torch.load(weights_only=True) must accept hpu tensors saved via __reduce_ex__.
    torch.serialization.add_safe_globals([_rebuild_on_hpu])
