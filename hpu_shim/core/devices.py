"""Exact translation of CUDA device specs to the backend device: the one implementation of it.

Only whole device specs are translated: ``"cuda"``, ``"cuda:1"``, ``torch.device("cuda", 0)``,
and ints where torch reads an int as a CUDA ordinal. Substring replacement (``"cuda_version"`` ->
``"npu_version"``, as torch_npu's transfer_to_npu does) is the counter-example we avoid.

One device per process (``docs/architecture.md``, "Devices"): on Gaudi every process opens one
HPU and the bridge's device guard wants that device active, so ``hpu:N`` with N > 0 fails in
rank >= 1 of a tensor-parallel vLLM. A CUDA ordinal therefore names *the process's* HPU:
``"cuda:N"`` becomes ``"hpu:<current>"`` (``DeviceTarget.current``), whatever N is.

``tensor_cuda_args`` is the single translation of ``Tensor.cuda(device, non_blocking, ...)``
shared by the rewrite tier and the class-level patch; ``is_torch_callee`` says which callees read
an int ``device=`` as an ordinal (torch factories, Tensor/Module methods, ``torch.device``).
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

__all__ = ["translate", "is_cuda_spec", "DeviceTarget", "tensor_cuda_args", "is_torch_callee"]

_CUDA_STR = re.compile(r"\Acuda(?::(\d+))?\Z")


class DeviceTarget:
    """Where CUDA devices go: a device type and, for indexed types, the process's device index.

    ``current`` returns the index this process uses (asked once, on the first indexed spec, so
    building a backend never touches the device); ``None`` means the type has no index (cpu).
    """

    __slots__ = ("type", "_current", "_index")

    def __init__(self, type: str, current: Callable[[], int] | None = None):
        self.type = type
        self._current = current
        self._index: int | None = None

    @property
    def indexed(self) -> bool:
        return self._current is not None

    def current(self) -> int:
        if self._index is None:
            self._index = int(self._current()) if self._current is not None else 0
        return self._index

    def spec(self, index: int | None) -> str:
        """``"cuda"`` (index None) -> the bare type; ``"cuda:N"`` -> the process's device."""
        if index is None or self._current is None:
            return self.type
        return f"{self.type}:{self.current()}"

    def __repr__(self) -> str:
        return f"DeviceTarget({self.type!r}, indexed={self.indexed})"


def _torch_device_type():
    torch = sys.modules.get("torch")
    return getattr(torch, "device", None) if torch is not None else None


def is_cuda_spec(obj: Any, *, allow_int: bool = False) -> bool:
    if isinstance(obj, str):
        return _CUDA_STR.match(obj) is not None
    if allow_int and type(obj) is int:
        return obj >= 0
    device_type = _torch_device_type()
    return device_type is not None and isinstance(obj, device_type) and obj.type == "cuda"


def translate(obj: Any, target: DeviceTarget, *, allow_int: bool = False) -> Any:
    """Return ``obj`` moved to ``target`` if it is a CUDA device spec, else ``obj`` itself.

    The result keeps the input's kind: a str stays a str and a torch.device stays a torch.device.
    An int (accepted by torch as a CUDA ordinal) becomes a str spec.
    """
    if isinstance(obj, str):
        m = _CUDA_STR.match(obj)
        if m is None:
            return obj
        return target.spec(int(m.group(1)) if m.group(1) is not None else None)
    if type(obj) is int:
        return target.spec(obj) if allow_int and obj >= 0 else obj
    device_type = _torch_device_type()
    if device_type is not None and isinstance(obj, device_type) and obj.type == "cuda":
        return device_type(target.spec(obj.index))
    return obj


def tensor_cuda_args(args: tuple, kwargs: dict, target: DeviceTarget) -> tuple[Any, dict]:
    """``Tensor.cuda(device=None, non_blocking=False, memory_format=...)`` -> ``(spec, kwargs for .to)``.

    ``device`` None means the current device (the bare type); an int is an ordinal here.
    """
    kwargs = dict(kwargs)
    device = args[0] if args else kwargs.pop("device", None)
    if len(args) > 1:
        kwargs.setdefault("non_blocking", args[1])
    spec = target.spec(None) if device is None else translate(device, target, allow_int=True)
    return spec, kwargs


def is_torch_callee(func: Any) -> bool:
    """Whether ``func(..., device=<int>)`` reads the int as a device ordinal: torch's own callables.

    torch factories (``torch.empty``), methods bound to a Tensor or an ``nn.Module``, and
    ``torch.device``/``torch.Generator``-like torch types. Any other callee's int is left alone.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    owner = getattr(func, "__self__", None)
    if owner is not None and isinstance(owner, (torch.Tensor, torch.nn.Module)):
        return True
    cls = func if isinstance(func, type) else getattr(func, "__objclass__", None)  # torch.Tensor.new_zeros
    if cls is not None:
        return getattr(cls, "__hpu_shim_redirect__", None) == "device" or _torch_module(getattr(cls, "__module__", None))
    return _torch_module(getattr(func, "__module__", None))


def _torch_module(name: Any) -> bool:
    return isinstance(name, str) and name.split(".", 1)[0] == "torch"
