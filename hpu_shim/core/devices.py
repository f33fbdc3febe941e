"""Exact translation of CUDA device specs to the backend device.

Only whole device specs are translated: ``"cuda"``, ``"cuda:1"``, ``torch.device("cuda", 0)``,
and ints where torch reads an int as a CUDA ordinal. Substring replacement (``"cuda_version"`` ->
``"npu_version"``, as torch_npu's transfer_to_npu does) is the counter-example we avoid.
"""

from __future__ import annotations

import re
import sys
from typing import Any

__all__ = ["translate", "is_cuda_spec", "DeviceTarget"]

_CUDA_STR = re.compile(r"\Acuda(?::(\d+))?\Z")


class DeviceTarget:
    """Where CUDA devices go: a device type and whether the CUDA ordinal is kept."""

    __slots__ = ("type", "keeps_index")

    def __init__(self, type: str, keeps_index: bool):
        self.type = type
        self.keeps_index = keeps_index

    def spec(self, index: int | None) -> str:
        if index is None or not self.keeps_index:
            return self.type
        return f"{self.type}:{index}"

    def __repr__(self) -> str:
        return f"DeviceTarget({self.type!r}, keeps_index={self.keeps_index})"


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
