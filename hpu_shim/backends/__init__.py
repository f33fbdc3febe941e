"""Device backends: what a redirected ``torch.cuda`` call does on the device the shim targets.

Each backend implements the ``op`` names of ``hpu_shim.redirects`` and says how to describe them
in the audit. ``BACKENDS`` maps ``HPU_SHIM_BACKEND`` values to classes; ``auto`` is resolved by
``resolve()``: hpu when ``torch.hpu.is_available()``, otherwise idle (pass-through).
"""

from __future__ import annotations

from .base import Backend, BackendUnavailable, DeviceProperties
from .cpu import CpuBackend
from .hpu import HpuBackend, probe_hpu

__all__ = ["Backend", "BackendUnavailable", "DeviceProperties", "CpuBackend", "HpuBackend", "BACKENDS", "resolve"]

BACKENDS: dict[str, type[Backend]] = {"hpu": HpuBackend, "cpu": CpuBackend}


def resolve(choice: str) -> Backend | None:
    """Return the backend for ``choice`` ('auto', 'hpu', 'cpu'); None means stay idle.

    Raises BackendUnavailable when 'hpu' is required and there is no HPU.
    """
    if choice == "auto":
        return HpuBackend() if probe_hpu()[0] else None
    if choice == "hpu":
        ok, why = probe_hpu()
        if not ok:
            raise BackendUnavailable(
                f"HPU_SHIM_BACKEND=hpu requires an HPU, but {why}. Run on a Gaudi host with "
                f"habana_frameworks installed, use HPU_SHIM_BACKEND=auto to stay idle without one, "
                f"or HPU_SHIM_BACKEND=cpu to redirect CUDA to the CPU."
            )
        return HpuBackend()
    return BACKENDS[choice]()
