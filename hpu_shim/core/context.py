"""``Redirector``: one active redirect session, the concrete ``protocols.RedirectContext``.

It is built, complete, by backend resolution (``hpu_shim.runtime.activation``) and owns what a
session hands to in-scope code: the ``torch``/``torch.cuda``/``torch.device``/``torch.hpu`` proxies,
the ``__builtins__`` with the proxy-aware ``__import__``, the rewrite helper, the redirect objects
cache (the redirect table plus the compat profile's overlay), and the two policies that decide
what happens at the edges: an unknown ``torch.cuda`` API (warn once per call site, or raise under
strict mode) and a dropped ``pin_memory=True`` (one log line per site). ``deactivate()`` turns
every proxy and helper into a pass-through; ``unbind()``/``unprepare()`` give a module its real
objects back. See ``docs/architecture.md``.
"""

from __future__ import annotations

import builtins
import logging
import sys
import warnings
from typing import Any, Mapping

from . import proxy as _proxy
from . import rewrite as _rewrite
from .. import redirects
from ..audit import site_of
from ..errors import UnsupportedCudaAPI

log = logging.getLogger("hpu_shim")

__all__ = ["Redirector", "CudaFallthroughWarning"]

_REAL_BUILTINS = builtins.__dict__


class CudaFallthroughWarning(UserWarning):
    """An in-scope torch.cuda API has no redirect; the real torch.cuda is used."""


class Redirector:
    """What in-scope code talks to while the shim is active (see the module docstring)."""

    def __init__(self, backend: Any, audit: Any, scope: Any, *, strict: bool,
                 overlay: Mapping[str, redirects.Redirect] | None = None):
        import torch

        self.active = False  # read on every proxied call: a plain attribute
        self.backend, self.audit, self.scope, self.strict = backend, audit, scope, strict
        self.overlay = dict(overlay or {})
        self.unknown: dict[tuple[str, str], int] = {}
        self._cache: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._pin_sites: set[str] = set()
        self.torch_proxy = _proxy.TorchProxy(self, torch)
        self.cuda_proxy = _proxy.CudaProxy(self, torch.cuda)
        self.device_type = _proxy.make_device_type(self)
        self.hpu_proxy = _proxy.HpuProxy(self, torch.hpu) if backend.name == "hpu" else None
        self.builtins = {**_REAL_BUILTINS, "__import__": _proxy.make_import(self, builtins.__import__)}
        self.helper = _rewrite.RewriteRuntime(self)

    # ---- lookups the proxies make ------------------------------------------------------------
    def lookup(self, key: str) -> redirects.Redirect | None:
        return redirects.lookup(key, self.overlay)

    def redirect_for(self, key: str) -> Any:
        obj = self._cache.get(key)
        if obj is None:
            entry = self.lookup(key)
            if entry is None or entry.kind != "namespace" and not hasattr(self.backend, entry.op):
                return None
            obj = self._cache.setdefault(key, _proxy.make_redirect(self, key, entry))
        return obj

    def proxy_for_module(self, module: Any) -> Any:
        """``from torch[.cuda[.x]] import ...`` -> the proxy standing for that module."""
        torch = sys.modules["torch"]
        if module is torch:
            return self.torch_proxy
        if module is torch.cuda:
            return self.cuda_proxy
        name = getattr(module, "__name__", "")
        if name.startswith("torch.cuda."):
            key = name[len("torch.cuda."):]
            entry = self.lookup(key)
            if entry is not None and entry.kind == "namespace":
                return self.redirect_for(key)
        return module

    def describe(self, op: str) -> str:
        text = self._descriptions.get(op)
        if text is None:
            text = self._descriptions[op] = self.backend.describe(op)
        return text

    # ---- the two edge policies -----------------------------------------------------------------
    def unknown_api(self, key: str, frame: Any, real: Any, name: str) -> Any:
        """No redirect for ``torch.cuda.<key>``: raise (strict) or warn once per site and fall through."""
        api, site = f"torch.cuda.{key}", site_of(frame)
        if self.strict:
            raise UnsupportedCudaAPI(api, site, self.backend.name)
        first = (api, site) not in self.unknown
        self.unknown[(api, site)] = self.unknown.get((api, site), 0) + 1
        if first:
            warnings.warn_explicit(
                f"hpu_shim: {api} has no {self.backend.name} redirect; falling through to the real "
                f"torch.cuda ({site}). Set HPU_SHIM_STRICT=1 to make this an error.",
                CudaFallthroughWarning, frame.f_code.co_filename, frame.f_lineno,
                module=frame.f_globals.get("__name__"),
            )
        return getattr(real, name)

    def note_pin_dropped(self, frame: Any, what: str) -> None:
        """``what`` is ``"pin_memory="`` (a keyword) or ``"Tensor.pin_memory"`` (a method call)."""
        site = site_of(frame)
        keyword = what.endswith("=")
        target = ("pin_memory=False" if keyword else "tensor unchanged") + \
            f" ({self.backend.name} cannot pin host memory)"
        self.audit.hit(frame, "modified", what, target, ("True",) if keyword else ())
        if site not in self._pin_sites:
            self._pin_sites.add(site)
            log.info("hpu_shim: %s dropped at %s: the %s backend has no pinned host memory",
                     "pin_memory=True" if keyword else "Tensor.pin_memory()", site, self.backend.name)

    # ---- modules ----------------------------------------------------------------------------------
    def prepare(self, namespace: dict) -> None:
        """Before an in-scope module's code runs: its own ``__builtins__`` and the rewrite helper."""
        namespace["__builtins__"] = self.builtins
        namespace[_rewrite.HELPER_NAME] = self.helper

    def unbind(self, namespace: dict) -> None:
        """Give a module the real objects back: builtins, ``torch``, ``torch.cuda``, ``torch.device``."""
        torch = sys.modules.get("torch")
        if namespace.get("__builtins__") is self.builtins:
            namespace["__builtins__"] = _REAL_BUILTINS
        if torch is None:
            return
        real = {id(self.torch_proxy): torch, id(self.cuda_proxy): torch.cuda, id(self.device_type): torch.device}
        if self.hpu_proxy is not None:
            real[id(self.hpu_proxy)] = torch.hpu
        for attr, value in list(namespace.items()):
            if id(value) in real:
                namespace[attr] = real[id(value)]
            elif _proxy.is_proxy_object(value) and attr in redirects.REDIRECTS and hasattr(torch.cuda, attr):
                namespace[attr] = getattr(torch.cuda, attr)

    def deactivate(self) -> None:
        """Every proxy and helper passes through from now on; cached names are forgotten."""
        self.active = False
        for obj in (self.torch_proxy, self.cuda_proxy, self.hpu_proxy, *self._cache.values()):
            _proxy.forget_cached(obj)
