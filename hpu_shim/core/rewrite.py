"""The source tier: rewrite device arguments in in-scope modules at import time.

``Tensor.to`` must never be patched process-wide (it is on vLLM's hot path), and a
``device="cuda"`` keyword can reach any torch factory. So, for in-scope source modules only,
the AST is rewritten before compilation (the pytest assertion-rewrite technique):

* ``X.to(...)``          -> ``@hpu_shim_rt.to(X, ...)``
* ``X.cuda(...)``        -> ``@hpu_shim_rt.cuda(X, ...)``
* ``X.pin_memory(...)``  -> ``@hpu_shim_rt.pin_memory(X, ...)``
* ``f(..., device=D)``   -> ``@hpu_shim_rt.call(f, ..., device=D)``
* ``f(..., pin_memory=P)`` -> ``f(..., pin_memory=@hpu_shim_rt.pin(P))``

``@hpu_shim_rt`` cannot collide with user names (it is not an identifier). The helpers translate
only exact CUDA device specs and pass everything else through untouched, so a ``.to`` method of
any other object behaves as before. ``device=`` keeps Python's evaluation order (callee, then
arguments) and sees the callee, so an int becomes a device only where torch reads it as an ordinal
(``devices.is_torch_callee``); another callee's ``device=0`` stays 0. Rewritten bytecode is cached
under its own pyc tag so plain imports never load it. The helpers depend only on
``protocols.RedirectContext``.
"""

from __future__ import annotations

import ast
import sys
from typing import TYPE_CHECKING, Any

from . import devices as _devices

if TYPE_CHECKING:
    from .protocols import RedirectContext

__all__ = ["rewrite", "RewriteRuntime", "HELPER_NAME", "VERSION"]

HELPER_NAME = "@hpu_shim_rt"
VERSION = 2  # bump when the rewrite changes: it is part of the pyc tag
_METHODS = ("to", "cuda", "pin_memory")
_KEYWORDS = {"pin_memory": "pin"}


def _helper(attr: str, node: ast.AST) -> ast.Attribute:
    return ast.copy_location(
        ast.Attribute(value=ast.copy_location(ast.Name(id=HELPER_NAME, ctx=ast.Load()), node), attr=attr, ctx=ast.Load()),
        node,
    )


class _Rewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _METHODS:
            self.count += 1
            return ast.copy_location(
                ast.Call(func=_helper(func.attr, func), args=[func.value, *node.args], keywords=node.keywords), node
            )
        for kw in node.keywords:
            helper = _KEYWORDS.get(kw.arg or "")
            if helper is not None:
                self.count += 1
                kw.value = ast.copy_location(ast.Call(func=_helper(helper, kw.value), args=[kw.value], keywords=[]), kw.value)
        if any(kw.arg == "device" for kw in node.keywords):
            self.count += 1
            return ast.copy_location(
                ast.Call(func=_helper("call", func), args=[func, *node.args], keywords=node.keywords), node)
        return node


def rewrite(tree: ast.Module) -> tuple[ast.Module, int]:
    """Rewrite a module AST in place; returns it and the number of rewritten sites."""
    rewriter = _Rewriter()
    tree = rewriter.visit(tree)
    ast.fix_missing_locations(tree)
    return tree, rewriter.count


class RewriteRuntime:
    """The object bound to ``@hpu_shim_rt`` in rewritten modules."""

    __slots__ = ("_rt",)

    def __init__(self, rt: "RedirectContext"):
        self._rt = rt

    def _takes_int(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, (torch.Tensor, torch.nn.Module))

    def to(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        rt = self._rt
        torch = sys.modules.get("torch")
        if torch is not None and obj is torch.Tensor and args:  # torch.Tensor.to(t, ...)
            obj, args = args[0], args[1:]
        if rt.active and (args or "device" in kwargs):
            target = rt.backend.target
            new_args = args
            if args:
                first = _devices.translate(args[0], target, allow_int=self._takes_int(obj))
                if first is not args[0]:
                    new_args = (first, *args[1:])
            new_kwargs = kwargs
            if "device" in kwargs:
                dev = _devices.translate(kwargs["device"], target, allow_int=self._takes_int(obj))
                if dev is not kwargs["device"]:
                    new_kwargs = {**kwargs, "device": dev}
            if new_args is not args or new_kwargs is not kwargs:
                shown = new_args[0] if new_args is not args else new_kwargs["device"]
                rt.audit.hit(sys._getframe(1), "match", f"{type(obj).__name__}.to", f".to({str(shown)!r})", args, kwargs)
                return obj.to(*new_args, **new_kwargs)
        return obj.to(*args, **kwargs)

    def cuda(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        rt = self._rt
        torch = sys.modules.get("torch")
        if torch is not None and obj is torch.Tensor and args:  # torch.Tensor.cuda(t, ...)
            obj, args = args[0], args[1:]
        if rt.active and self._takes_int(obj):
            spec, to_kwargs = _devices.tensor_cuda_args(args, kwargs, rt.backend.target)
            rt.audit.hit(sys._getframe(1), "match", f"{type(obj).__name__}.cuda", f".to({str(spec)!r})", args, kwargs)
            if isinstance(obj, torch.nn.Module):
                return obj.to(spec)
            return obj.to(spec, **to_kwargs)
        return obj.cuda(*args, **kwargs)

    def pin_memory(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        rt = self._rt
        if rt.active and not rt.backend.can_pin and self._takes_int(obj):
            rt.note_pin_dropped(sys._getframe(1), "Tensor.pin_memory")
            return obj
        return obj.pin_memory(*args, **kwargs)

    def call(self, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``func(*args, device=D, **kwargs)``: D translated; an int only for torch's own callees."""
        rt = self._rt
        if rt.active:
            value = kwargs["device"]
            new = _devices.translate(value, rt.backend.target,
                                     allow_int=type(value) is int and _devices.is_torch_callee(func))
            if new is not value:
                kwargs["device"] = new
                rt.audit.hit(sys._getframe(1), "match", "device=", f"device={str(new)!r}", (value,))
        return func(*args, **kwargs)

    def pin(self, value: Any) -> Any:
        rt = self._rt
        if rt.active and value is True and not rt.backend.can_pin:
            rt.note_pin_dropped(sys._getframe(1), "pin_memory=")
            return False
        return value
