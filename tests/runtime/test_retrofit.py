"""hpu_shim.runtime.retrofit: modules imported before install() are named, retrofitted and restored."""

import pytest
import torch

from hpu_shim.core.proxy import TorchProxy
from hpu_shim.runtime.retrofit import LateInstallWarning, shorten


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


def test_reinstall_rebinds_code_rewritten_under_the_first_install(shim):
    shim.install(backend="cpu")
    import lmcache

    shim.uninstall()
    with pytest.warns(LateInstallWarning):
        shim.install(backend="cpu")
    assert lmcache.tensor_cuda(torch.ones(1)).device.type == "cpu"  # the old helper was rebound


def test_long_module_lists_are_shortened():
    names = [f"lmcache.m{i}" for i in range(200)]
    text = shorten(names)
    assert text.endswith("(+192 more)") and len(text) < 200
