"""The scoped import hook: a meta-path finder that prepares in-scope modules *before* they run.

Post-import hooks (wrapt's) fire too late: LMCache decides ``import lmcache.c_ops`` at import
time from ``torch.cuda.is_available()``. So for every in-scope module this finder

1. asks the remaining finders for the real spec (editable-install finders keep working),
2. wraps the loader so that, before the module's code runs, the module gets
   * its own ``__builtins__`` whose ``__import__`` hands out the torch proxies, which covers
     ``import torch``, ``import torch.cuda as tc``, ``from torch.cuda import Stream`` and imports
     inside functions that first run later on another thread;
   * for source modules, bytecode from the rewrite tier (``_rewrite``), cached under its own tag,
3. puts the original loader back on ``__loader__`` and ``__spec__.loader`` (wrapt #221).

Out-of-scope names return ``None`` after one cached dict lookup.
"""

from __future__ import annotations

import ast
import builtins
import importlib.abc
import importlib.util
import logging
import marshal
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import rewrite as _rewrite

if TYPE_CHECKING:
    from ..runtime.runtime import Runtime

log = logging.getLogger("hpu_shim")

__all__ = ["ScopedFinder", "make_import", "PYC_TAG"]

PYC_TAG = f"hpushim{_rewrite.VERSION}"
_MAGIC = importlib.util.MAGIC_NUMBER


def make_import(rt: "Runtime", real_import: Any) -> Any:
    """The ``__import__`` that in-scope modules see: real import first, then hand out proxies."""
    torch_names = ("torch",)

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A001
        module = real_import(name, globals, locals, fromlist, level)
        if level or not rt.active or not (name in torch_names or name.startswith("torch.")):
            return module
        if not fromlist:
            return rt.torch_proxy  # `import torch[.cuda[.x]] [as y]` binds the top-level package
        return rt.proxy_for_module(module)

    __import__.__hpu_shim_redirect__ = "__import__"
    return __import__


def _source_path(loader: Any, fullname: str) -> str | None:
    get_filename = getattr(loader, "get_filename", None)
    if get_filename is None or not hasattr(loader, "get_data"):
        return None
    try:
        path = get_filename(fullname)
    except (ImportError, OSError):
        return None
    return path if isinstance(path, str) and path.endswith(".py") else None


def _pyc_header(st: os.stat_result) -> bytes:
    return (
        _MAGIC
        + (0).to_bytes(4, "little")
        + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )


def rewritten_code(loader: Any, path: str) -> Any:
    """Bytecode of ``path`` after the rewrite tier, from our own pyc cache when it is fresh."""
    st = os.stat(path)
    header = _pyc_header(st)
    try:
        cache = importlib.util.cache_from_source(path, optimization=PYC_TAG)
    except NotImplementedError:  # sys.implementation.cache_tag is None
        cache = None
    if cache:
        try:
            with open(cache, "rb") as fh:
                data = fh.read()
            if data[:16] == header:
                return marshal.loads(data[16:])
        except (OSError, ValueError, EOFError):
            pass
    source = loader.get_data(path)
    tree, _ = _rewrite.rewrite(ast.parse(source, filename=path))
    code = compile(tree, path, "exec", dont_inherit=True)
    if cache and not sys.dont_write_bytecode:
        tmp = f"{cache}.{os.getpid()}.{threading.get_ident()}"
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(header + marshal.dumps(code))
            os.replace(tmp, cache)  # atomic: concurrent workers never read a torn file
        except OSError:  # read-only site-packages: just don't cache
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return code


class _ShimLoader(importlib.abc.Loader):
    """Wraps a real loader; everything not overridden is forwarded to it."""

    def __init__(self, loader: Any, rt: "Runtime"):
        self._loader = loader
        self._rt = rt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        rt, loader = self._rt, self._loader
        # Put the real loader back first, so module code that reads __loader__ sees it (wrapt #221).
        module.__loader__ = loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = loader
        rt.ensure_backend()  # resolves 'auto' on the first in-scope import; may raise for 'hpu'
        if not rt.active:
            loader.exec_module(module)
            return
        rt.prepare_module(module)
        path = _source_path(loader, module.__name__)
        if path is None:  # no source to rewrite: .cuda() calls in it need the class patch
            rt.need_tensor_class_patch(f"{module.__name__} has no source for the rewrite tier")
            loader.exec_module(module)
        else:
            exec(rewritten_code(loader, path), module.__dict__)
        rt.note_shimmed(module)


class _StandInLoader(importlib.abc.Loader):
    """Builds a compat stand-in module (e.g. torch-native ``lmcache.c_ops``) instead of the real one."""

    def __init__(self, build: Any, rt: "Runtime"):
        self._build = build
        self._rt = rt

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        self._build(module)
        frame = sys._getframe(1)
        while frame is not None and (frame.f_globals.get("__name__") not in self._rt.scope
                                     or frame.f_globals.get("__name__") == module.__name__):
            frame = frame.f_back
        if frame is not None:
            self._rt.audit.hit(frame, "modified", f"import {module.__name__}",
                               f"{getattr(module, '__hpu_shim_stand_in__', 'hpu_shim stand-in')}")
        self._rt.note_stand_in(module.__name__)


def stand_in_spec(fullname: str, build: Any, rt: "Runtime") -> Any:
    return importlib.util.spec_from_loader(fullname, _StandInLoader(build, rt), origin="hpu_shim stand-in")


class ScopedFinder(importlib.abc.MetaPathFinder):
    def __init__(self, rt: "Runtime"):
        self._rt = rt
        self._finding = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        rt = self._rt
        if fullname not in rt.scope or not rt.hook_enabled:
            return None
        override = rt.module_override(fullname)
        if override is not None:
            return override
        finding = self._finding.__dict__.setdefault("names", set())
        if fullname in finding:
            return None
        finding.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace packages and legacy loaders run unchanged
        spec.loader = _ShimLoader(spec.loader, rt)
        return spec

    def invalidate_caches(self) -> None:
        pass


def shim_builtins(rt: "Runtime") -> dict:
    return {**builtins.__dict__, "__import__": make_import(rt, builtins.__import__)}
