"""The scoped import hook: a meta-path finder that prepares in-scope modules *before* they run.

Post-import hooks (wrapt's) fire too late: LMCache decides ``import lmcache.c_ops`` at import
time from ``torch.cuda.is_available()``. So for every in-scope module this finder

1. asks every other finder for the spec (wrapt's and ddtrace's composition: whoever finds it,
   editable-install finders and pytest's assertion rewriter included) and wraps that spec's loader;
2. before the module's code runs, gives the module its own ``__builtins__`` whose ``__import__``
   hands out the torch proxies (``import torch``, ``import torch.cuda as tc``, ``from torch.cuda
   import Stream``, imports inside functions that first run later on another thread);
3. runs the module the way its loader kind allows (``LOADER_KINDS``): plain source files through
   the rewrite tier (``rewrite``, own pyc tag), zip archives through the rewrite tier uncached, and
   every other loader (``.pyc``-only, extension modules, pytest's rewriter) through its own
   ``exec_module``, naming once, at WARNING, what the rewrite tier could not reach there;
4. keeps ``__loader__`` and ``__spec__.loader`` the real loader (wrapt #221).

``python -m lmcache.x`` (runpy) asks the loader for ``get_code`` and runs it itself in
``__main__``: the code handed back prepares that namespace the same way first.

The finder stays first on ``sys.meta_path`` (``FirstOnMetaPath``): libraries that insert their
own finder at index 0 after the shim (pytest does, after sitecustomize ran) are placed right
behind it, so in-scope modules always reach it. Out-of-scope names return ``None`` after one
cached dict lookup. Depends only on ``protocols.HookHost``/``RedirectContext``.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import marshal
import os
import sys
import threading
import zipimport
from typing import TYPE_CHECKING, Any

from . import rewrite as _rewrite

if TYPE_CHECKING:
    from .protocols import HookHost

log = logging.getLogger("hpu_shim")

__all__ = ["ScopedFinder", "FirstOnMetaPath", "PYC_TAG", "LOADER_KINDS", "run_main", "scan"]

PYC_TAG = f"hpushim{_rewrite.VERSION}"
_MAGIC = importlib.util.MAGIC_NUMBER

#: How each loader type's modules run in scope. "cached": source files, rewritten, own pyc cache;
#: "source": rewritten from ``get_source`` (zip archives: nothing to stat, nowhere to cache);
#: anything else runs through the loader's own ``exec_module`` with the shim's builtins, and the
#: reason below is what the rewrite tier could not reach.
LOADER_KINDS: dict[type, str] = {
    importlib.machinery.SourceFileLoader: "cached",
    zipimport.zipimporter: "source",
}
#: loader type -> (why the rewrite tier cannot reach it, what is therefore NOT redirected, class patch needed)
_NOT_REWRITTEN = {
    importlib.machinery.SourcelessFileLoader: ("it has no source (.pyc only)", None, True),
    importlib.machinery.ExtensionFileLoader: (
        "it is a compiled extension module", "CUDA used from its compiled code is NOT redirected", False),
}
_MISSED = "device='cuda', .to('cuda') and pin_memory=True in it are NOT redirected (torch.cuda.* and " \
          "Tensor.cuda() still are)"


def _pyc_header(st: os.stat_result) -> bytes:
    return (
        _MAGIC
        + (0).to_bytes(4, "little")
        + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )


def _compile(source: str | bytes, path: str) -> Any:
    tree, _ = _rewrite.rewrite(ast.parse(source, filename=path))
    return compile(tree, path, "exec", dont_inherit=True)


def rewritten_code(loader: Any, path: str) -> Any:
    """Bytecode of the source file ``path`` after the rewrite tier, from our own pyc cache when fresh."""
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
    code = _compile(loader.get_data(path), path)
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


def _code_for(loader: Any, fullname: str) -> Any:
    """The rewritten code of ``fullname``, or None when its loader kind has no source for the rewrite."""
    kind = LOADER_KINDS.get(type(loader))
    if kind == "cached":
        path = loader.get_filename(fullname)
        if path.endswith(".py"):
            return rewritten_code(loader, path)
    elif kind == "source":
        source = loader.get_source(fullname)
        if source is not None:
            return _compile(source, loader.get_filename(fullname))
    return None


def _not_rewritten(loader: Any) -> tuple[str, str, bool]:
    """(why, what is missed, whether Python code in it needs the Tensor.cuda class patch)."""
    why, missed, class_patch = _NOT_REWRITTEN.get(type(loader)) or (
        f"it was loaded by {type(loader).__module__}.{type(loader).__qualname__}, not from a plain source file",
        None, True)
    return why, missed or _MISSED, class_patch


def _note_not_rewritten(host: "HookHost", name: str, loader: Any) -> None:
    why, missed, class_patch = _not_rewritten(loader)
    host.not_redirected(name, f"{name}: {why}; {missed}")
    if class_patch:
        host.need_tensor_class_patch(f"{name}: {why}")


def scan(packages: Any, exclude: Any = ()) -> list[str]:
    """What the rewrite tier will not reach in the installed ``packages``, found on disk without
    importing them (``doctor``): ``.pyc``-only modules and compiled extension modules."""
    lines = []
    for package in packages:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            if not os.path.isdir(root):
                continue
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                rel = os.path.relpath(folder, root)
                prefix = package if rel == "." else ".".join([package, *rel.split(os.sep)])
                for file in sorted(files):
                    stem, ext = file.split(".", 1)[0], os.path.splitext(file)[1]
                    name = f"{prefix}.{stem}" if stem != "__init__" else prefix
                    if name in exclude:
                        continue
                    if ext == ".pyc" and not os.path.exists(os.path.join(folder, stem + ".py")):
                        why, missed, _ = _NOT_REWRITTEN[importlib.machinery.SourcelessFileLoader]
                    elif any(file.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES):
                        why, missed = _NOT_REWRITTEN[importlib.machinery.ExtensionFileLoader][:2]
                    else:
                        continue
                    lines.append(f"{name}: {why}; {missed or _MISSED}")
    return lines


class _ShimLoader(importlib.abc.Loader):
    """Wraps whichever loader found an in-scope module; everything not overridden is forwarded."""

    def __init__(self, loader: Any, host: "HookHost"):
        self._loader = loader
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        host, loader = self._host, self._loader
        # Put the real loader back first, so module code that reads __loader__ sees it (wrapt #221).
        module.__loader__ = loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = loader
        ctx = host.ensure_backend()  # resolves 'auto' on the first in-scope import; may raise for 'hpu'
        if ctx is None:
            loader.exec_module(module)
            return
        name, namespace = module.__name__, module.__dict__
        ctx.prepare(namespace)
        try:
            code = _code_for(loader, name)
            if code is None:  # .cuda() calls in it need the class patch; device= cannot be reached
                _note_not_rewritten(host, name, loader)
                loader.exec_module(module)
            else:
                exec(code, namespace)
        finally:
            if not ctx.active:  # uninstall() ran while this module executed: leave nothing behind
                ctx.unbind(namespace)
                namespace.pop(_rewrite.HELPER_NAME, None)
        if ctx.active:
            host.note_shimmed(name, module, ctx)

    def get_code(self, fullname: str) -> Any:
        """What runpy (``python -m``) executes in ``__main__``: a stub that prepares it, then runs."""
        real = self._loader.get_code(fullname)
        if real is None:
            return None
        _MAIN_LOADERS[fullname] = self
        stub = f"__import__('hpu_shim.core.finder', fromlist=['run_main']).run_main(globals(), {fullname!r})\n"
        return compile(stub, f"<hpu_shim: run {fullname} in scope>", "exec", dont_inherit=True)

    def run_main(self, namespace: dict, fullname: str) -> None:
        host, loader = self._host, self._loader
        namespace["__loader__"] = loader
        spec = namespace.get("__spec__")
        if spec is not None and spec.loader is self:
            spec.loader = loader
        ctx = host.ensure_backend()
        code = _code_for(loader, fullname) if ctx is not None else None
        if ctx is not None:
            ctx.prepare(namespace)
            if code is None:
                _note_not_rewritten(host, fullname, loader)
            host.note_shimmed(f"{fullname} (as {namespace.get('__name__')})", None, ctx)
        exec(code if code is not None else loader.get_code(fullname), namespace)


_MAIN_LOADERS: dict[str, _ShimLoader] = {}


def run_main(namespace: dict, fullname: str) -> None:
    """Entry point of the code ``_ShimLoader.get_code`` hands to runpy."""
    _MAIN_LOADERS[fullname].run_main(namespace, fullname)


class _StandInLoader(importlib.abc.Loader):
    """Builds a compat stand-in module (e.g. torch-native ``lmcache.c_ops``) instead of the real one."""

    def __init__(self, build: Any, host: "HookHost"):
        self._build = build
        self._host = host

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        self._build(module)
        frame = sys._getframe(1)
        scope = self._host.scope
        while frame is not None and (frame.f_globals.get("__name__") not in scope
                                     or frame.f_globals.get("__name__") == module.__name__):
            frame = frame.f_back
        if frame is not None:
            self._host.audit.hit(frame, "modified", f"import {module.__name__}",
                                 f"{getattr(module, '__hpu_shim_stand_in__', 'hpu_shim stand-in')}")
        self._host.note_stand_in(module.__name__)


class ScopedFinder(importlib.abc.MetaPathFinder):
    def __init__(self, host: "HookHost"):
        self._host = host
        self._finding = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        host = self._host
        if fullname not in host.scope or not host.hook_enabled:
            return None
        build = host.module_override(fullname)
        if build is not None:
            return importlib.util.spec_from_loader(fullname, _StandInLoader(build, host), origin="hpu_shim stand-in")
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
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module") or \
                spec.origin is None and spec.submodule_search_locations is not None:
            return spec  # namespace packages (no code) and legacy loaders run unchanged
        if not isinstance(spec.loader, _ShimLoader):
            spec.loader = _ShimLoader(spec.loader, host)
        return spec

    def invalidate_caches(self) -> None:
        pass


class FirstOnMetaPath(list):
    """``sys.meta_path`` while the shim is installed: an ``insert`` at or before the shim's finder
    lands right behind it, so whoever inserts at index 0 later (pytest's assertion rewriter, type
    checkers' hooks) still runs, composed behind the shim for in-scope names and unchanged for the rest.
    """

    def __init__(self, items: Any, first: Any):
        super().__init__(items)
        self.first = first

    def insert(self, index: int, item: Any) -> None:
        if item is not self.first and self.first in self:
            where = self.index(self.first)
            index = max(0, index + len(self)) if index < 0 else index
            index = max(index, where + 1)
        super().insert(index, item)

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        if self.first in self and self[0] is not self.first:
            super().remove(self.first)
            super().insert(0, self.first)
