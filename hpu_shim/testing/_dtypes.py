"""Dtypes the HPU stores differently from what torch reports (docs/gaudi-semantics.md "int64", "Dtypes").

* int64 without ``PT_ENABLE_INT64_SUPPORT`` (the lazy-mode default): the device holds Long tensors as
  int32 while torch keeps reporting int64.  Every host->device copy casts on the host (lazy mode first
  checks the range and raises on overflow, eager mode truncates), every device->host copy widens on
  the host, and device ops compute in int32 (results wrap).

The emulator keeps the host backing in torch's dtype and reproduces the value effects: it checks
and counts the casts at the copy, and wraps every Long result of a device op to int32.
"""

from __future__ import annotations

import torch

from . import _counters, _lazy, _profile

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def int64_as_int32() -> bool:
    """True when the device holds Long as int32 (PT_ENABLE_INT64_SUPPORT off)."""
    return not _profile.current().int64_native


def check_h2d(src: torch.Tensor) -> None:
    """What the bridge refuses before a host->device copy starts (nothing is written then)."""
    lazy_checked = _lazy.is_lazy() and _profile.current().range_check
    if src.dtype == torch.int64 and int64_as_int32() and lazy_checked and src.numel():
        _check_int32_range(src)


def h2d(src: torch.Tensor) -> tuple[int, bool]:
    """Counts of one host->device copy from ``src``: (bytes staged, staged from ``src`` itself).

    ``src`` itself is staged unless the bridge first made a new host tensor (a cast).
    """
    nbytes = src.numel() * src.element_size()
    if src.dtype == torch.int64 and int64_as_int32():
        _counters.bump("int64_host_casts")
        _counters.bump("int64_host_cast_bytes", nbytes)
        return nbytes // 2, False
    return nbytes, True


def d2h(src: torch.Tensor) -> tuple[int, bool]:
    """(bytes staged, whether the bridge forces the copy to block) for a device->host copy of ``src``."""
    nbytes = src.numel() * src.element_size()
    if src.dtype == torch.int64 and int64_as_int32():
        _counters.bump("int64_host_casts")
        _counters.bump("int64_host_cast_bytes", nbytes)
        # eager widens on the host right after a blocking copy (habana_eager/ops/copy_from.cpp)
        return nbytes // 2, not _lazy.is_lazy()
    return nbytes, False


def _check_int32_range(src: torch.Tensor) -> None:
    """lazy_kernels.cpp validateDownCast: an int64 value outside int32 aborts the copy."""
    lo, hi = int(src.min()), int(src.max())
    if lo < INT32_MIN or hi > INT32_MAX:
        raise RuntimeError(
            f"Error when trying to cast Long to Int, Input values range [{lo}, {hi}] exceeds Int range "
            f"[{INT32_MIN}, {INT32_MAX}] [emulated HPU, lazy mode: the device holds int64 as int32 unless "
            "PT_ENABLE_INT64_SUPPORT=1 (docs/gaudi-semantics.md, int64)]")


def after_op(host: torch.Tensor) -> None:
    """Value effects of the device's storage dtype on a tensor a device op just wrote."""
    if host.dtype == torch.int64 and int64_as_int32() and host.numel():
        host.copy_(host.to(torch.int32))  # int32 arithmetic wraps


def after_d2h(src: torch.Tensor, dst: torch.Tensor | None) -> None:
    """The host side of a device->host copy gets what the device held (int32-wide Long values)."""
    if dst is not None and dst.device.type == "cpu" and src.dtype == torch.int64 == dst.dtype:
        after_op(dst)
