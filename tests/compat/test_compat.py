"""hpu_shim.compat (profiles): chosen by release, applied by the runtime, bounded to the tested range,
and a fix-up that raises never breaks LMCache's import."""

from __future__ import annotations

import gc
import logging

import pytest

from hpu_shim import compat
from hpu_shim.compat import Fixup, Profile


def _release(pkgs, version: str) -> None:
    """Make the tmp `lmcache` package look like an installed release (package metadata only)."""
    info = pkgs / f"lmcache-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lmcache\nVersion: {version}\n")


def test_c_ops_buffers_outlive_uninstall(shim, pkgs):
    """LMCache keeps the addresses of the stand-in's host buffers; uninstall() must not free them."""
    _release(pkgs, "0.3.7")
    shim.install(backend="cpu")
    import lmcache.c_ops as ops

    assert "lmcache.c_ops" in shim.status()["stand_in_modules"]
    ptr = ops.alloc_pinned_ptr(4096, 0)
    from hpu_shim.compat import c_ops

    shim.uninstall()
    gc.collect()
    assert ptr in c_ops._buffers  # still owned: LMCache may read and write it after uninstall
    ops.free_pinned_ptr(ptr)
    assert ptr not in c_ops._buffers


def _fixture_profile(post_exec: dict):
    def factory(version):
        return Profile(name=f"{version} (test)", post_exec=post_exec)
    return factory


def test_a_fixup_that_raises_is_undone_and_the_import_goes_on(shim, pkgs, monkeypatch, caplog):
    _release(pkgs, "0.4.0")
    (pkgs / "lmcache" / "fx.py").write_text("VALUE = 'lmcache'\nOTHER = 1\n")

    def broken(module, ctx):
        ctx.patches.patch(module, "VALUE", "patched")
        ctx.patches.patch(module, "OTHER", 2)
        raise KeyError("half-way")

    monkeypatch.setattr(compat, "PROFILES", [(lambda v: True, _fixture_profile({"lmcache.fx": broken}))])
    shim.install(backend="cpu")
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        import lmcache.fx as fx
    assert (fx.VALUE, fx.OTHER) == ("lmcache", 1)
    assert shim.status()["patched_attributes"] == []
    (msg,) = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert "broken" in msg and "lmcache.fx" in msg and "undone" in msg and "0.4.0 (test)" in msg
    assert "KeyError" in caplog.text  # the traceback is kept for the report


def test_outside_the_tested_range_warn_once_and_apply_only_what_still_holds(shim, pkgs, monkeypatch, caplog):
    _release(pkgs, "9.9.9")
    (pkgs / "lmcache" / "fa.py").write_text("class Engine:\n    pass\n")
    (pkgs / "lmcache" / "fb.py").write_text("X = 1\n")
    (pkgs / "lmcache" / "fc.py").write_text("X = 1\n")

    def mark(module, ctx):
        ctx.patches.patch(module, "FIXED", True)

    post_exec = {"lmcache.fa": Fixup(mark, lambda m: hasattr(m, "Engine")),   # precondition holds
                 "lmcache.fb": Fixup(mark, lambda m: hasattr(m, "Engine")),   # it does not
                 "lmcache.fc": mark}                                          # none declared
    monkeypatch.setattr(compat, "PROFILES", [(lambda v: True, _fixture_profile(post_exec))])
    monkeypatch.setattr(compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        shim.install(backend="cpu")
        import lmcache.fa
        import lmcache.fb
        import lmcache.fc
    warned = [r.getMessage() for r in caplog.records if "outside the tested range" in r.getMessage()]
    assert len(warned) == 1 and "9.9.9" in warned[0] and "0.3.1 - 0.5.6" in warned[0]
    assert getattr(lmcache.fa, "FIXED", False) is True
    assert not hasattr(lmcache.fb, "FIXED") and not hasattr(lmcache.fc, "FIXED")


@pytest.mark.parametrize("version,name", [("0.3.7", "CUDA-only"), ("0.5.6", "native HPU"), (None, "generic")])
def test_profile_by_release(version, name, pkgs, monkeypatch):
    if version:
        _release(pkgs, version)
    monkeypatch.syspath_prepend(str(pkgs))
    assert compat.lmcache_version() == version
    profile = compat.select(("lmcache",))
    assert name in profile.name and profile.tested
    assert compat.select(("other",)) is None
