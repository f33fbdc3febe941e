"""hpu_shim.core.context: the Redirector's edge policies (unknown APIs, strict mode, dropped pinning)."""

import pytest
import torch

import hpu_shim


def test_strict_mode_keeps_feature_probing_working(shim, pkgs):
    (pkgs / "lmcache" / "probe.py").write_text(
        "import torch\n"
        "def probe():\n"
        "    return (hasattr(torch.cuda, 'get_sync_debug_mode'), getattr(torch.cuda, 'get_sync_debug_mode', None),\n"
        "            hasattr(torch.cuda, 'current_device'))\n"
        "def use():\n"
        "    return torch.cuda.get_sync_debug_mode\n")
    shim.install(backend="cpu", strict=True)
    import lmcache.probe as probe

    assert probe.probe() == (False, None, True)
    with pytest.raises(hpu_shim.UnsupportedCudaAPI) as err:
        probe.use()
    assert isinstance(err.value, AttributeError) and isinstance(err.value, RuntimeError)
    assert err.value.api == "torch.cuda.get_sync_debug_mode" and err.value.site == "lmcache/probe.py:6"


def test_pin_memory_dropped_once_per_site_and_audited(shim, pkgs, caplog):
    (pkgs / "lmcache" / "pin.py").write_text(
        "import torch\n"
        "def alloc():\n"
        "    return torch.empty(4, pin_memory=True)\n"
        "def pin(t):\n"
        "    return t.pin_memory()\n")
    shim.install(backend="cpu")
    import lmcache.pin as pin

    with caplog.at_level("INFO", logger="hpu_shim"):
        for _ in range(3):
            assert pin.alloc().is_pinned() is False
        t = torch.ones(1)
        assert pin.pin(t) is t
    dropped = [r.getMessage() for r in caplog.records if "dropped at" in r.getMessage()]
    assert len(dropped) == 2 and "lmcache/pin.py:3" in dropped[0] and "lmcache/pin.py:5" in dropped[1]
    lines = [r.line() for r in shim.report() if r.site.startswith("lmcache/pin.py")]
    assert any("pin_memory=True -> pin_memory=False (cpu cannot pin host memory) @ lmcache/pin.py:3 (x3)" in x
               for x in lines), lines


def test_deactivated_session_passes_through(shim):
    shim.install(backend="cpu")
    import lmcache

    cuda = lmcache.torch.cuda
    red = shim.runtime.runtime.RUNTIME.session.redirector
    shim.uninstall()
    assert red.active is False and cuda.is_available() is False  # the real torch.cuda on this host
