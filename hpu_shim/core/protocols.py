"""The narrow interfaces between the redirect core and the runtime that composes it.

The import hook (``finder``), the proxies (``proxy``), the source rewrite (``rewrite``) and the
``Tensor.cuda`` class patch (``tensor_patch``) each depend on one of these protocols, never on
``hpu_shim.runtime``: this module is a leaf (it imports only ``typing``), so the core has no import
cycle, not even a type-only one. ``hpu_shim.core.context.Redirector`` implements
``RedirectContext``; ``hpu_shim.runtime.runtime.Runtime`` implements ``HookHost``. See
``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

__all__ = ["AuditSink", "BackendLike", "ScopeLike", "RedirectContext", "HookHost"]


class AuditSink(Protocol):
    """Where redirected call sites are counted (``hpu_shim.audit.Audit``)."""

    #: ``(id(code), f_lasti, api) -> Record``: the hot path's read-only index (a dict lookup and an increment)
    sites: dict

    def hit(self, frame: Any, category: str, api: str, target: Any, args: tuple = (),
            kwargs: dict | None = None) -> None: ...


class BackendLike(Protocol):
    """What the core reads from a backend (``hpu_shim.backends.Backend``)."""

    name: str
    target: Any  # hpu_shim.core.devices.DeviceTarget
    can_pin: bool

    def describe(self, op: str) -> str: ...


class ScopeLike(Protocol):
    """Which module names are "inside LMCache" (``hpu_shim.core.scope.Scope``)."""

    packages: tuple
    #: module name -> in scope; read-only for hot paths (filled by ``__contains__``)
    decisions: dict

    def __contains__(self, module_name: object) -> bool: ...


class RedirectContext(Protocol):
    """One active redirect session: what proxies, the rewrite helper and the Tensor.cuda patch use.

    ``active`` is read on every redirected call; once it is False (``uninstall()``) every proxy and
    helper passes straight through to the real ``torch``.
    """

    active: bool
    backend: BackendLike
    audit: AuditSink
    scope: ScopeLike
    torch_proxy: Any
    cuda_proxy: Any
    device_type: Any
    hpu_proxy: Any

    def lookup(self, key: str) -> Any: ...
    def redirect_for(self, key: str) -> Any: ...
    def proxy_for_module(self, module: Any) -> Any: ...
    def describe(self, op: str) -> str: ...
    def unknown_api(self, key: str, frame: Any, real: Any, name: str) -> Any: ...
    def note_pin_dropped(self, frame: Any, what: str) -> None: ...


class HookHost(Protocol):
    """What the import hook asks of whoever installed it (the runtime)."""

    scope: ScopeLike
    audit: AuditSink

    @property
    def hook_enabled(self) -> bool: ...

    def ensure_backend(self) -> Any:
        """The active ``RedirectContext`` (resolving the backend on first use), or None: run unshimmed."""

    def module_override(self, fullname: str) -> Callable[[Any], None] | None:
        """A stand-in builder for ``fullname`` (e.g. ``lmcache.c_ops``), or None for the real module."""

    def note_stand_in(self, name: str) -> None: ...
    def note_shimmed(self, module: Any, ctx: Any) -> None: ...
    def need_tensor_class_patch(self, reason: str) -> None: ...
    def not_redirected(self, module_name: str, what: str) -> None: ...
