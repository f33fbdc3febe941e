"""hpu_shim.runtime.runtime: idempotent install/uninstall, env export, late install, the order matrix."""

import itertools
import os
import sys
import warnings

import pytest
import torch

from hpu_shim.runtime.runtime import LateInstallWarning, bootstrap_dir
from hpu_shim.core.proxy import TorchProxy


def test_install_uninstall_idempotent(shim):
    assert shim.status()["state"] == "uninstalled"
    s1 = shim.install(backend="cpu")
    s2 = shim.install(backend="cpu")
    assert s1["state"] == s2["state"] == "active"
    assert sum(type(f).__name__ == "ScopedFinder" for f in sys.meta_path) == 1
    assert shim.status()["patched_attributes"] == []  # nothing process-wide until late modules need it
    shim.uninstall()
    shim.uninstall()
    assert not any(type(f).__name__ == "ScopedFinder" for f in sys.meta_path)
    assert shim.status()["state"] == "uninstalled" and "cuda" not in torch.Tensor.__dict__


def test_explicit_arguments_win_and_same_arguments_are_silent(shim, caplog):
    shim.install(backend="cpu")
    with caplog.at_level("DEBUG", logger="hpu_shim"):
        shim.install(backend="cpu")  # the environment now says HPU_SHIM=1: still the same arguments
    assert [r for r in caplog.records if r.levelno >= 30] == []
    shim.install(backend="cpu", scope=["other"])
    assert shim.status()["scope"] == ["other"] and shim.status()["installed"]
    assert sum(type(f).__name__ == "ScopedFinder" for f in sys.meta_path) == 1


def test_install_after_import_uses_its_arguments():
    from _helpers import run_py

    proc = run_py("""
        import logging, hpu_shim
        logging.basicConfig(level=logging.WARNING)
        before = hpu_shim.status()["backend_requested"]
        st = hpu_shim.install(backend="cpu", strict=True)
        print(before, st["backend_requested"], st["strict"], st["installed"])
    """, env={"HPU_SHIM_BACKEND": "auto"})
    assert proc.stdout.split() == ["auto", "cpu", "True", "True"], proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr


def test_first_original_wins():
    from hpu_shim.core.patches import PatchRegistry

    class Owner:
        def f(self):
            return "orig"

    reg = PatchRegistry()
    original = Owner.__dict__["f"]
    reg.patch(Owner, "f", lambda self: "one")
    reg.patch(Owner, "f", lambda self: "two")
    assert reg.get_original(Owner, "f") is original
    reg.restore_all()
    assert Owner.__dict__["f"] is original and Owner().f() == "orig"


def test_env_exported_and_restored(shim, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.delenv("HPU_SHIM_SCOPE", raising=False)
    shim.install(backend="cpu")
    assert os.environ["HPU_SHIM"] == "1" and os.environ["HPU_SHIM_BACKEND"] == "cpu"
    assert os.environ["HPU_SHIM_SCOPE"] == "lmcache"
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [bootstrap_dir(), "/somewhere"]
    assert os.path.isfile(os.path.join(bootstrap_dir(), "sitecustomize.py"))
    shim.uninstall()
    assert os.environ["PYTHONPATH"] == "/somewhere" and os.environ["HPU_SHIM"] == "0"
    assert "HPU_SHIM_SCOPE" not in os.environ


def test_late_install_warns_retrofits_and_undoes(shim):
    import lmcache
    import otherpkg

    assert lmcache.torch is torch
    with pytest.warns(LateInstallWarning) as rec:
        shim.install(backend="cpu")
    msg = str(rec[0].message)
    assert "lmcache" in msg and "lmcache.sub" not in msg and "otherpkg" not in msg
    assert "NOT redirected" in msg and ".to('cuda')" in msg
    st = shim.status()
    assert st["late_modules"] == ["lmcache"]
    assert "lmcache.torch (retrofit)" in st["patched_attributes"]
    assert "lmcache.Stream (retrofit)" in st["patched_attributes"]
    assert "torch.Tensor.cuda (inherited)" in st["patched_attributes"]  # lmcache's code was never rewritten
    assert isinstance(lmcache.torch, TorchProxy) and lmcache.current_device() == 0
    assert otherpkg.torch is torch
    shim.uninstall()
    assert lmcache.torch is torch and lmcache.Stream is torch.cuda.Stream and lmcache.cuda is torch.cuda


# --- the permutation matrix of import / install / uninstall orders (ddtrace's PatchTestCase idea) ---
STEPS = ("install", "uninstall")
SEQUENCES = sorted({
    seq[:i] + ("import",) + seq[i:]
    for n in range(4) for seq in itertools.product(STEPS, repeat=n) for i in range(n + 1)
})


@pytest.mark.parametrize("sequence", SEQUENCES, ids="-".join)
def test_order_matrix(shim, sequence):
    installed, imported_while_active = False, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LateInstallWarning)
        for step in sequence:
            if step == "install":
                shim.install(backend="cpu")
                installed = True
            elif step == "uninstall":
                shim.uninstall()
                installed = False
            else:
                import lmcache
                imported_while_active = installed
    import lmcache
    import otherpkg

    assert otherpkg.torch is torch and otherpkg.forms()["torch.cuda"] is torch.cuda
    if installed:
        assert isinstance(lmcache.torch, TorchProxy) and lmcache.current_device() == 0
        assert lmcache.tensor_cuda(torch.ones(1)).device.type == "cpu"
        assert shim.status()["state"] == "active"
        assert sum(type(f).__name__ == "ScopedFinder" for f in sys.meta_path) == 1
    else:
        assert lmcache.torch is torch and "cuda" not in torch.Tensor.__dict__
        assert not any(type(f).__name__ == "ScopedFinder" for f in sys.meta_path)
    # `import` while active means the module was shimmed before its code ran:
    assert lmcache.AVAILABLE_AT_IMPORT is imported_while_active
