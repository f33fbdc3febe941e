"""Dtypes the HPU stores differently from what torch reports, or refuses (docs/gaudi-semantics.md "int64", "Dtypes").

* int64 without ``PT_ENABLE_INT64_SUPPORT`` (the lazy-mode default): the device holds Long tensors as
  int32 while torch keeps reporting int64.  Every host->device copy casts on the host (lazy mode first
  checks the range and raises on overflow, eager mode truncates), every device->host copy widens on
  the host, and device ops compute in int32 (results wrap).
* float64 is no HPU dtype: the bridge silently holds Double as float32 (same scheme: host cast on the
  way in, with a range check in lazy mode, widening on the way out, float32 arithmetic).
* complex is refused at allocation ("Complex datatype is not supported on HPU device."), and so is
  any other dtype outside the bridge's ``is_supported_type``.

The emulator keeps the host backing in torch's dtype and reproduces the value effects: it checks
and counts the casts at the copy, wraps every Long result of a device op to int32 and rounds every
Double result to float32 (counted in ``float64_downcasts`` so tests can assert it never happens).
"""

from __future__ import annotations

import torch

from . import _counters, _lazy, _profile

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: backend/helpers/tensor_utils.cpp is_supported_type, for a Gaudi2 (fp16 and fp8 supported).
SUPPORTED = frozenset({
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32, torch.float64,
    torch.bool, torch.bfloat16, torch.float16, torch.float8_e5m2, torch.float8_e4m3fn,
})


def check_device_dtype(dtype: torch.dtype) -> None:
    """Refuse a device allocation of a dtype the bridge does not support."""
    if dtype in SUPPORTED:
        return
    if dtype.is_complex:
        raise RuntimeError(
            "Complex datatype is not supported on HPU device. [emulated HPU: keep complex tensors on the "
            "host, or store real and imaginary parts as two real tensors (docs/gaudi-semantics.md, Dtypes)]")
    raise RuntimeError(
        f"{dtype} is not supported on HPU device [emulated HPU: the bridge's is_supported_type refuses it; "
        f"supported: {', '.join(sorted(str(d) for d in SUPPORTED))} (docs/gaudi-semantics.md, Dtypes)]")


def int64_as_int32() -> bool:
    """True when the device holds Long as int32 (PT_ENABLE_INT64_SUPPORT off)."""
    return not _profile.current().int64_native


def check_h2d(src: torch.Tensor) -> None:
    """What the bridge refuses before a host->device copy starts (nothing is written then)."""
    lazy_checked = _lazy.is_lazy() and _profile.current().range_check
    if src.dtype == torch.int64 and int64_as_int32() and lazy_checked and src.numel():
        _check_int32_range(src)
    elif src.dtype == torch.float64 and lazy_checked and src.numel():
        _check_float32_range(src)


def h2d(src: torch.Tensor) -> tuple[int, bool]:
    """Counts of one host->device copy from ``src``: (bytes staged, staged from ``src`` itself).

    ``src`` itself is staged unless the bridge first made a new host tensor (a cast).
    """
    nbytes = src.numel() * src.element_size()
    if src.dtype == torch.int64 and int64_as_int32():
        _counters.bump("int64_host_casts")
        _counters.bump("int64_host_cast_bytes", nbytes)
        return nbytes // 2, False
    if src.dtype == torch.float64:
        _counters.bump("float64_downcasts")
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
    if src.dtype == torch.float64:
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


def _check_float32_range(src: torch.Tensor) -> None:
    """lazy_kernels.cpp validateDownCast<double, float>: finite values beyond float32 abort the copy."""
    finite = src[torch.isfinite(src)]
    if finite.numel() and float(finite.abs().max()) > FLOAT32_MAX:
        raise RuntimeError(
            f"Error when trying to cast Double to Float, Input values range [{float(finite.min())}, "
            f"{float(finite.max())}] exceeds Float range [{-FLOAT32_MAX}, {FLOAT32_MAX}] [emulated HPU: "
            "float64 is held as float32 on the device (docs/gaudi-semantics.md, Dtypes)]")


def after_op(host: torch.Tensor, count: bool = True) -> None:
    """Value effects of the device's storage dtype on a tensor a device op just wrote."""
    if not host.numel():
        return
    if host.dtype == torch.int64 and int64_as_int32():
        host.copy_(host.to(torch.int32))  # int32 arithmetic wraps
    elif host.dtype == torch.float64:
        host.copy_(host.to(torch.float32))  # float32 storage and arithmetic
        if count:
            _counters.bump("float64_downcasts")


def after_d2h(src: torch.Tensor, dst: torch.Tensor | None) -> None:
    """The host side of a device->host copy gets what the device held (int32-wide Long values)."""
    if dst is not None and dst.device.type == "cpu" and src.dtype == dst.dtype and src.dtype == torch.int64:
        after_op(dst)
