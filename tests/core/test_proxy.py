"""hpu_shim.core.proxy: redirected classes keep isinstance; unknown APIs warn once per site or raise."""

import warnings

import pytest
import torch

import hpu_shim
from hpu_shim.runtime.runtime import CudaFallthroughWarning


def test_redirected_classes_keep_isinstance(shim):
    shim.install(backend="cpu")
    import lmcache

    s = lmcache.forms()["Stream"]()
    assert isinstance(s, lmcache.forms()["Stream"])
    assert not isinstance(object(), lmcache.forms()["Stream"])
    dev = lmcache.make_device("cuda:0")
    assert dev == torch.device("cpu") and isinstance(dev, lmcache.torch.device)
    assert lmcache.torch.cuda.Stream.priority_range() == (0, 0)


@pytest.mark.parametrize("args,kwargs", [(("cuda",), {}), (("cuda:1",), {}), (("cuda", 0), {}),
                                         ((), {"type": "cuda", "index": 1}), ((0,), {}),
                                         ((torch.device("cuda"),), {})])
def test_torch_device_forms(shim, args, kwargs):
    shim.install(backend="cpu")
    import lmcache

    assert lmcache.make_device(*args, **kwargs) == torch.device("cpu")


def test_torch_device_non_cuda_untouched(shim):
    shim.install(backend="cpu")
    import lmcache

    assert lmcache.make_device("meta") == torch.device("meta")


def test_unknown_api_warns_once_per_site_and_falls_through(shim, pkgs):
    (pkgs / "lmcache" / "unk.py").write_text(
        "import torch\n"
        "def a():\n    return torch.cuda.get_sync_debug_mode\n"
        "def b():\n    return torch.cuda.get_sync_debug_mode\n")
    shim.install(backend="cpu")
    import lmcache.unk as unk

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert unk.a() is torch.cuda.get_sync_debug_mode
        unk.b()
    msgs = [str(w.message) for w in caught if issubclass(w.category, CudaFallthroughWarning)]
    assert len(msgs) == 2, msgs
    assert "torch.cuda.get_sync_debug_mode" in msgs[0] and "lmcache/unk.py:3" in msgs[0]
    assert any("lmcache/unk.py:5" in m for m in msgs)
    assert any("get_sync_debug_mode @ lmcache/unk.py:3 (x3)" in u for u in shim.status()["unknown_apis"])


def test_strict_raises_with_api_and_site(shim, pkgs):
    (pkgs / "lmcache" / "unk.py").write_text("import torch\ndef a():\n    return torch.cuda.get_sync_debug_mode()\n")
    shim.install(backend="cpu", strict=True)
    import lmcache.unk as unk

    with pytest.raises(hpu_shim.UnsupportedCudaAPI) as err:
        unk.a()
    msg = str(err.value)
    assert "torch.cuda.get_sync_debug_mode has no cpu redirect" in msg and "lmcache/unk.py:3" in msg
    assert "HPU_SHIM_STRICT=1" in msg
    assert err.value.api == "torch.cuda.get_sync_debug_mode" and err.value.site == "lmcache/unk.py:3"


def test_proxies_pass_through_after_uninstall(shim):
    shim.install(backend="cpu")
    import lmcache

    escaped = lmcache.torch.cuda.current_device  # a reference that outlives uninstall
    shim.uninstall()
    with pytest.raises((AssertionError, RuntimeError)):
        escaped()  # the real torch.cuda.current_device on a CPU-only torch
