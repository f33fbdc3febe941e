"""hpu_shim.core.finder: every import form is redirected in scope, none outside it."""

import importlib
import importlib.machinery
import sys
import threading

import pytest
import torch

from hpu_shim.core.proxy import CudaProxy, TorchProxy


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
