"""Exceptions the shim raises. Each message names what was wrong and what to do."""

from __future__ import annotations

from .runtime.config import ShimConfigError
from .backends.base import BackendUnavailable

__all__ = ["UnsupportedCudaAPI", "ShimConfigError", "BackendUnavailable"]


class UnsupportedCudaAPI(RuntimeError, AttributeError):
    """An in-scope ``torch.cuda`` API with no redirect, under ``HPU_SHIM_STRICT=1``.

    Also an ``AttributeError``, so feature probing (``hasattr(torch.cuda, "x")``,
    ``getattr(torch.cuda, "x", None)``) answers "absent" instead of raising.
    """

    def __init__(self, api: str, site: str, backend: str):
        self.api, self.site, self.backend = api, site, backend
        RuntimeError.__init__(
            self,
            f"{api} has no {backend} redirect in hpu_shim (used at {site}). "
            f"HPU_SHIM_STRICT=1 turns unknown torch.cuda APIs into errors; unset it to warn and fall "
            f"through to the real torch.cuda, or add a row to hpu_shim.redirects."
        )
