"""hpu_shim.core.finder: every import form is redirected in scope, none outside it."""

import importlib
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
import threading

import pytest
import torch

from _helpers import CUDA_PKG, REPO, clean_env, run_py
from hpu_shim.core.proxy import CudaProxy, TorchProxy
from hpu_shim.testing.results import run_child


def _install(shim):
    shim.install(backend="cpu")


def test_every_import_form_in_scope(shim):
    _install(shim)
    import lmcache

    assert isinstance(lmcache.torch, TorchProxy)
    forms = lmcache.forms()
    for name in ("torch.cuda", "tc", "cuda"):
        assert isinstance(forms[name], CudaProxy), name
    assert forms["Stream"] is not torch.cuda.Stream and forms["Stream"].__module__ == "hpu_shim.redirected"
    assert lmcache.AVAILABLE_AT_IMPORT is True  # the cpu backend reports itself, at import time
    assert lmcache.current_device() == 0
    assert lmcache.lazy_import_current_device() == (0, 0)
    import lmcache.sub

    assert lmcache.sub.avail() is True


@pytest.mark.parametrize("control", ["otherpkg", "lmcache_vllm"])
def test_control_packages_untouched(shim, control):
    _install(shim)
    mod = importlib.import_module(control)
    assert mod.torch is torch and mod.forms()["torch.cuda"] is torch.cuda
    assert mod.forms()["Stream"] is torch.cuda.Stream
    assert mod.AVAILABLE_AT_IMPORT is False  # the real torch.cuda on this CPU host
    with pytest.raises((AssertionError, RuntimeError)):
        mod.current_device()


def test_import_inside_function_first_run_on_other_threads(shim):
    _install(shim)
    import lmcache

    results, errors = [], []

    def work():
        try:
            results.append(lmcache.lazy_import_current_device())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and results == [(0, 0)] * 8


def test_concurrent_first_imports_finish(shim, pkgs):
    for i in range(6):
        (pkgs / "lmcache" / f"m{i}.py").write_text("import torch\nX = torch.cuda.device_count()\n")
    _install(shim)
    seen, errors = {}, []

    def imp(i):
        try:
            seen[i] = importlib.import_module(f"lmcache.m{i}").X
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=imp, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and seen == {i: 1 for i in range(6)}


def test_loader_restored(shim):
    _install(shim)
    import lmcache

    assert type(lmcache.__loader__) is importlib.machinery.SourceFileLoader
    assert type(lmcache.__spec__.loader) is importlib.machinery.SourceFileLoader


def test_rewritten_bytecode_has_its_own_pyc_tag(shim, pkgs, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    _install(shim)
    import lmcache  # noqa: F401

    cached = sorted(p.name for p in (pkgs / "lmcache" / "__pycache__").iterdir())
    assert any("opt-hpushim" in name for name in cached), cached
    assert not any(name.endswith(f"{sys.implementation.cache_tag}.pyc") for name in cached), cached


def test_reload_keeps_the_shim(shim):
    _install(shim)
    import lmcache

    importlib.reload(lmcache)
    assert isinstance(lmcache.torch, TorchProxy) and lmcache.current_device() == 0


def test_modules_imported_after_uninstall_are_plain(shim):
    _install(shim)
    shim.uninstall()
    import lmcache

    assert lmcache.torch is torch and lmcache.AVAILABLE_AT_IMPORT is False


# --- composition with other loaders and finders (issue 8: in-scope code never escapes silently) ---
SITE = str(REPO / "sitecustomize")
SHIM_ENV = {"PYTHONPATH": SITE, "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"}

SCOPED_TEST = '''
import torch
from hpu_shim.testing.results import emit


def test_in_scope():
    import hpu_shim
    emit({"available": torch.cuda.is_available(), "device": str(torch.device("cuda:0")),
          "loader": type(__loader__).__name__, "shimmed": __name__ in hpu_shim.status()["shimmed_modules"],
          "not_redirected": hpu_shim.status()["not_redirected"]})
    x = 1
    assert x == 2
'''


@pytest.mark.parametrize("assert_mode", ["rewrite", "plain"])
def test_pytest_loaded_test_modules_are_in_scope(tmp_path, assert_mode):
    """pytest inserts its assertion rewriter at sys.meta_path[0] after sitecustomize installed the shim."""
    pkg = tmp_path / "scopedtests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "test_inscope.py").write_text(SCOPED_TEST)
    env = clean_env(**{**SHIM_ENV, "PYTHONPATH": os.pathsep.join([SITE, str(REPO)])}, HPU_SHIM_SCOPE="scopedtests")
    child = run_child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--assert={assert_mode}",
                       str(pkg)], env=env, cwd=tmp_path, timeout=300)
    r = child.one()
    assert r["available"] is True and r["device"] == "cpu" and r["shimmed"] is True, child.diagnostics()
    assert child.returncode == 1  # the deliberate `assert x == 2` failed ...
    if assert_mode == "rewrite":  # ... and pytest's own rewriting still explains it: the loaders composed
        assert r["loader"] == "AssertionRewritingHook" and "assert 1 == 2" in child.stdout, child.diagnostics()
        assert any("AssertionRewritingHook" in line for line in r["not_redirected"]), r
    else:
        assert r["loader"] == "SourceFileLoader" and r["not_redirected"] == []


def test_python_m_runs_the_module_in_scope(pkgs):
    (pkgs / "lmcache" / "tool.py").write_text(
        "import torch\nfrom hpu_shim.testing.results import emit\n"
        "if __name__ == '__main__':\n"
        "    emit({'available': torch.cuda.is_available(), 'factory': str(torch.empty(1, device='cuda').device),\n"
        "          'loader': type(__loader__).__name__})\n")
    env = clean_env(**{**SHIM_ENV, "PYTHONPATH": os.pathsep.join([SITE, str(pkgs), str(REPO)])})
    child = run_child([sys.executable, "-m", "lmcache.tool"], env=env, timeout=300)
    assert child.returncode == 0, child.diagnostics()
    assert child.one() == {"available": True, "factory": "cpu", "loader": "SourceFileLoader"}


def _zip_package(tmp_path):
    import zipfile

    archive = tmp_path / "lmcache_pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("lmcache/__init__.py", CUDA_PKG)
    return archive


@pytest.mark.parametrize("on", [True, False])
def test_package_imported_from_a_zip(tmp_path, on):
    archive = _zip_package(tmp_path)
    proc = run_py("""
        import hpu_shim, lmcache
        from hpu_shim.testing.results import emit
        emit({"available": lmcache.AVAILABLE_AT_IMPORT, "state": hpu_shim.status()["state"],
              "loader": type(lmcache.__loader__).__name__})
        if lmcache.AVAILABLE_AT_IMPORT:
            emit({"factory": str(lmcache.factory().device), "to": str(lmcache.tensor_to(__import__("torch").ones(1)).device)})
    """, path=[archive], env={"HPU_SHIM": "1" if on else "0", "HPU_SHIM_BACKEND": "cpu"})
    first = proc.results[0]
    assert first["loader"] == "zipimporter" and first["available"] is on
    if on:  # the rewrite tier reached the zipped source too
        assert proc.results[1] == {"factory": "cpu", "to": "cpu"}


def test_pyc_only_module_is_named_once_at_warning(shim, pkgs, caplog):
    import py_compile

    src = pkgs / "lmcache" / "compiled.py"
    src.write_text("import torch\ndef make():\n    return torch.empty(1, device='cuda')\n"
                   "def avail():\n    return torch.cuda.is_available()\n")
    py_compile.compile(str(src), cfile=str(pkgs / "lmcache" / "compiled.pyc"))
    src.unlink()
    shim.install(backend="cpu")
    with caplog.at_level("WARNING", logger="hpu_shim"):
        import lmcache.compiled
    lines = [r.getMessage() for r in caplog.records if "lmcache.compiled" in r.getMessage()]
    assert len(lines) == 1 and "no source (.pyc only)" in lines[0] and "device='cuda'" in lines[0], lines
    assert lmcache.compiled.avail() is True  # torch.cuda.* is still redirected in it
    st = shim.status()
    assert any("lmcache.compiled" in line and "NOT redirected" in line for line in st["not_redirected"]), st
    assert "lmcache.compiled" in st["tensor_cuda_class_patch"]


def test_uninstall_during_an_in_scope_import_leaves_nothing(shim, pkgs):
    (pkgs / "lmcache" / "selfremove.py").write_text("import hpu_shim\nhpu_shim.uninstall()\nimport torch\n")
    shim.install(backend="cpu")
    import builtins

    import lmcache.selfremove as mod

    assert mod.__builtins__ is builtins.__dict__ or mod.__builtins__ is builtins
    assert mod.torch is torch
    assert shim.status()["shimmed_modules"] == [] and shim.status()["state"] == "uninstalled"


def test_finder_stays_first_when_others_insert_at_zero(shim):
    class Other(importlib.abc.MetaPathFinder):
        def find_spec(self, *args):
            return None

    shim.install(backend="cpu")
    other = Other()
    sys.meta_path.insert(0, other)
    try:
        assert type(sys.meta_path[0]).__name__ == "ScopedFinder" and sys.meta_path[1] is other
        sys.meta_path[:] = [other, *[f for f in sys.meta_path if f is not other]]  # a snapshot restore
        assert type(sys.meta_path[0]).__name__ == "ScopedFinder"
    finally:
        sys.meta_path.remove(other)
    shim.uninstall()
    assert type(sys.meta_path) is list


def test_doctor_names_what_cannot_be_redirected(pkgs):
    import py_compile

    from hpu_shim.core.finder import scan

    src = pkgs / "lmcache" / "compiled.py"
    src.write_text("X = 1\n")
    py_compile.compile(str(src), cfile=str(pkgs / "lmcache" / "compiled.pyc"))
    src.unlink()
    sys.path.insert(0, str(pkgs))
    try:
        lines = scan(["lmcache"])
    finally:
        sys.path.remove(str(pkgs))
    assert lines == ["lmcache.compiled: it has no source (.pyc only); device='cuda', .to('cuda') and "
                     "pin_memory=True in it are NOT redirected (torch.cuda.* and Tensor.cuda() still are)"]
    proc = subprocess.run([sys.executable, "-m", "hpu_shim", "doctor"], capture_output=True, text=True, timeout=300,
                          env=clean_env(PYTHONPATH=os.pathsep.join([str(pkgs), str(REPO)])))
    assert "cannot be redirected   lmcache.compiled: it has no source (.pyc only)" in proc.stdout, proc.stdout


def test_namespace_packages_in_scope_are_left_alone(shim, pkgs):
    (pkgs / "lmcache" / "ns").mkdir()  # no __init__.py: a namespace package
    (pkgs / "lmcache" / "ns" / "mod.py").write_text("import torch\nX = torch.cuda.is_available()\n")
    shim.install(backend="cpu")
    import lmcache.ns.mod

    st = shim.status()
    assert lmcache.ns.mod.X is True and st["not_redirected"] == [] and st["tensor_cuda_class_patch"] is None
