"""What in-scope modules get when they import ``torch``: proxies that redirect only ``cuda``.

``TorchProxy`` forwards every attribute to the real ``torch`` (identity kept: ``torch.Tensor``,
dtypes, ``torch.nn``) except ``cuda`` and ``device``. ``CudaProxy`` resolves each name through
the redirect table. Redirected classes (``Stream``, ``Event``, ``torch.device``) are real types
built on a metaclass, so ``isinstance`` checks and annotations in LMCache keep working.

Resolved names are cached in the proxy's own ``__dict__`` (a plain module-attribute lookup on the
next use instead of a ``__getattr__`` call); ``uninstall()`` clears those caches. Every redirect
consults ``ctx.active`` on use: after ``uninstall()`` a reference that escaped (a closure, a class
attribute) passes straight through to the real ``torch``. ``make_import`` builds the ``__import__``
in-scope modules see. Everything here depends only on ``protocols.RedirectContext`` (``ctx``).
"""

from __future__ import annotations

import functools
import sys
import types
from typing import TYPE_CHECKING, Any

from . import devices as _devices
from ..redirects import Redirect

if TYPE_CHECKING:
    from .protocols import RedirectContext

__all__ = ["TorchProxy", "CudaProxy", "HpuProxy", "make_redirect", "make_device_type", "make_import",
           "forget_cached", "is_proxy_object"]

_MARK = "__hpu_shim_redirect__"


class _ForwardingModule(types.ModuleType):
    def __init__(self, rt: "RedirectContext", real: types.ModuleType):
        super().__init__(real.__name__, real.__doc__)
        d = self.__dict__
        d["_hpu_shim_rt"] = rt
        d["_hpu_shim_real"] = real
        for attr in ("__file__", "__path__", "__package__", "__spec__", "__loader__"):
            if hasattr(real, attr):
                d[attr] = getattr(real, attr)
        d[_MARK] = True
        d["_hpu_shim_cached"] = set()
        # A module-level __getattr__ (PEP 562) in the instance dict rather than a method on the class:
        # attribute hits then stay on ModuleType's C lookup, without the Python-level getattr hook.
        d["__getattr__"] = self._hpu_shim_getattr

    def _hpu_shim_getattr(self, name: str) -> Any:
        return getattr(self._hpu_shim_real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._hpu_shim_real, name, value)  # writes go where they would without the shim
        self.__dict__.pop(name, None)

    def __delattr__(self, name: str) -> None:
        delattr(self._hpu_shim_real, name)
        self.__dict__.pop(name, None)

    def _hpu_shim_cache(self, name: str, value: Any) -> Any:
        if not name.startswith("__"):
            self.__dict__[name] = value
            self.__dict__["_hpu_shim_cached"].add(name)
        return value

    def _hpu_shim_clear(self) -> None:
        """Forget cached names (uninstall): the next access resolves through ``__getattr__`` again."""
        d = self.__dict__
        for name in d["_hpu_shim_cached"]:
            d.pop(name, None)
        d["_hpu_shim_cached"].clear()

    def __dir__(self):
        return dir(self._hpu_shim_real)

    def __repr__(self) -> str:
        return f"<hpu_shim proxy of module {self._hpu_shim_real.__name__!r}>"


class TorchProxy(_ForwardingModule):
    def _hpu_shim_getattr(self, name: str) -> Any:
        rt = self._hpu_shim_rt
        if not rt.active:
            return getattr(self._hpu_shim_real, name)
        special = {"cuda": rt.cuda_proxy, "device": rt.device_type, "hpu": rt.hpu_proxy}.get(name)
        # Everything else is torch's own object, cached by identity (torch.empty, torch.Tensor, dtypes).
        return self._hpu_shim_cache(name, special if special is not None else getattr(self._hpu_shim_real, name))


class HpuProxy(_ForwardingModule):
    """``torch.hpu`` in scope: only ``get_device_properties`` changes, from a str (docs/gaudi-semantics.md "torch.hpu API") to an object
    with ``.name``/``.total_memory``; LMCache 0.4.3 - 0.4.7 call ``.name`` on it."""

    def _hpu_shim_getattr(self, name: str) -> Any:
        rt = self._hpu_shim_rt
        if rt.active and name == "get_device_properties":
            return self._hpu_shim_cache(name, _hpu_device_properties(rt))
        return getattr(self._hpu_shim_real, name)


def _hpu_device_properties(rt: "RedirectContext") -> Any:
    def get_device_properties(device: Any = None) -> Any:
        rt.audit.hit(sys._getframe(1), "modified", "torch.hpu.get_device_properties",
                     functools.partial(rt.describe, "get_device_properties"), (device,) if device is not None else ())
        return rt.backend.get_device_properties(device)

    return get_device_properties


class CudaProxy(_ForwardingModule):
    """``torch.cuda`` (prefix ``""``) or a sub-namespace such as ``torch.cuda.nvtx``."""

    def __init__(self, rt: "RedirectContext", real: types.ModuleType, prefix: str = ""):
        super().__init__(rt, real)
        self.__dict__["_hpu_shim_prefix"] = prefix

    def _hpu_shim_getattr(self, name: str) -> Any:
        rt = self._hpu_shim_rt
        real = self._hpu_shim_real
        if not rt.active or name.startswith("__"):
            return getattr(real, name)
        key = self._hpu_shim_prefix + name
        obj = rt.redirect_for(key)
        if obj is None:  # not cached: every call site of an unknown API must be seen
            return rt.unknown_api(key, sys._getframe(1), real, name)
        return self._hpu_shim_cache(name, obj)


def _real_cuda_attr(key: str) -> Any:
    obj: Any = sys.modules["torch"].cuda
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def make_redirect(rt: "RedirectContext", key: str, entry: Redirect) -> Any:
    """Build the object that stands for ``torch.cuda.<key>`` in scope."""
    api = f"torch.cuda.{key}"
    if entry.kind == "namespace":
        return CudaProxy(rt, _real_cuda_attr(key), prefix=key + ".")
    if entry.kind == "class":
        return _make_class(rt, key, api, entry)
    op, category = entry.op, entry.category
    target = functools.partial(rt.describe, op)  # built into the audit record on the first hit only
    hit, records, getframe = rt.audit.hit, rt.audit.sites, sys._getframe
    bound: list = [None, None]  # (backend, its bound method): re-resolved if the backend changes

    def redirect(*args: Any, **kwargs: Any) -> Any:
        # The hot path of every in-scope torch.cuda call: counted inline (Audit.hit's fast path),
        # the backend method cached; the full Audit.hit runs once per call site.
        if not rt.active:
            return _real_cuda_attr(key)(*args, **kwargs)
        frame = getframe(1)
        rec = records.get((id(frame.f_code), frame.f_lasti, api))
        if rec is None:
            hit(frame, category, api, target, args, kwargs)
        else:
            rec.count += 1
        backend = rt.backend
        if bound[0] is not backend:
            bound[0], bound[1] = backend, getattr(backend, op)
        return bound[1](*args, **kwargs)

    redirect.__name__ = redirect.__qualname__ = key.rsplit(".", 1)[-1]
    redirect.__doc__ = f"hpu_shim redirect of {api} [{category}]: {entry.note or 'same semantics'}"
    setattr(redirect, _MARK, key)
    return redirect


class _RedirectMeta(type):
    """A redirected class: constructing it builds the backend object; isinstance sees its type."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        rt = cls._hpu_shim_rt
        if not rt.active:
            return _real_cuda_attr(cls._hpu_shim_key)(*args, **kwargs)
        rt.audit.hit(sys._getframe(1), cls._hpu_shim_category, cls._hpu_shim_api,
                     functools.partial(rt.describe, cls._hpu_shim_op), args, kwargs)
        return getattr(rt.backend, cls._hpu_shim_op)(*args, **kwargs)

    def _target(cls) -> type:
        rt = cls._hpu_shim_rt
        if not rt.active:
            return _real_cuda_attr(cls._hpu_shim_key)
        return rt.backend.instance_type(cls._hpu_shim_op)

    def __instancecheck__(cls, obj: Any) -> bool:
        target = cls._target()
        return isinstance(target, type) and isinstance(obj, target)

    def __subclasscheck__(cls, sub: Any) -> bool:
        target = cls._target()
        return isinstance(target, type) and issubclass(sub, target)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        rt = cls._hpu_shim_rt
        if rt.active:
            extra = getattr(rt.backend, "class_attrs", {}).get(cls._hpu_shim_op, {})
            if name in extra:
                value = extra[name]
                return value.__func__ if isinstance(value, staticmethod) else value
        return getattr(cls._target(), name)


def _make_class(rt: "RedirectContext", key: str, api: str, entry: Redirect) -> type:
    return _RedirectMeta(
        key.rsplit(".", 1)[-1],
        (),
        {
            "__doc__": f"hpu_shim redirect of {api} [{entry.category}]: {entry.note or 'same semantics'}",
            "__module__": "hpu_shim.redirected",
            "_hpu_shim_rt": rt,
            "_hpu_shim_key": key,
            "_hpu_shim_api": api,
            "_hpu_shim_op": entry.op,
            "_hpu_shim_category": entry.category,
            _MARK: key,
        },
    )


class _DeviceMeta(type):
    """``torch.device`` in scope: CUDA specs become the backend device; isinstance is unchanged."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        real = sys.modules["torch"].device
        rt = cls._hpu_shim_rt
        if not rt.active:
            return real(*args, **kwargs)
        new_args, new_kwargs = _translate_device_ctor(args, kwargs, rt.backend.target)
        if new_args != args or new_kwargs != kwargs:
            result = real(*new_args, **new_kwargs)
            rt.audit.hit(sys._getframe(1), "match", "torch.device", f"torch.device({str(result)!r})", args, kwargs)
            return result
        return real(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, sys.modules["torch"].device)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, sys.modules["torch"].device)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(sys.modules["torch"].device, name)


def _translate_device_ctor(args: tuple, kwargs: dict, target: _devices.DeviceTarget) -> tuple[tuple, dict]:
    """torch.device accepts ("cuda"), ("cuda:1"), ("cuda", 1), (type=, index=), (0), (device)."""
    if args:
        first = args[0]
        if first == "cuda" and (len(args) == 2 or "index" in kwargs):
            index = args[1] if len(args) == 2 else kwargs["index"]
            rest = {k: v for k, v in kwargs.items() if k != "index"}
            return (target.spec(index),), rest
        return (_devices.translate(first, target, allow_int=True), *args[1:]), kwargs
    if kwargs.get("type") == "cuda":
        rest = {k: v for k, v in kwargs.items() if k not in ("type", "index")}
        return (target.spec(kwargs.get("index")),), rest
    return args, kwargs


def make_device_type(rt: "RedirectContext") -> type:
    return _DeviceMeta("device", (), {"__module__": "hpu_shim.redirected", "_hpu_shim_rt": rt, _MARK: "device"})


def make_import(rt: "RedirectContext", real_import: Any) -> Any:
    """The ``__import__`` that in-scope modules see: real import first, then hand out proxies."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A001
        module = real_import(name, globals, locals, fromlist, level)
        if level or not rt.active or not (name == "torch" or name.startswith("torch.")):
            return module
        if not fromlist:
            return rt.torch_proxy  # `import torch[.cuda[.x]] [as y]` binds the top-level package
        return rt.proxy_for_module(module)

    __import__.__hpu_shim_redirect__ = "__import__"
    return __import__


def forget_cached(obj: Any) -> None:
    """Drop the names a proxy module cached (``uninstall()``); anything else is left alone."""
    if isinstance(obj, _ForwardingModule):
        obj._hpu_shim_clear()


def is_proxy_object(obj: Any) -> bool:
    try:
        return bool(getattr(obj, _MARK, False)) if isinstance(obj, (types.ModuleType, type, types.FunctionType)) else False
    except Exception:
        return False
