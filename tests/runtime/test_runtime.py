"""hpu_shim.runtime.runtime: idempotent install/uninstall, explicit arguments, lazy and race-free
backend resolution, and the order matrix of import/install/uninstall."""

import itertools
import sys
import warnings

import pytest
import torch

from _helpers import REPO, run_py
from hpu_shim.runtime.runtime import LateInstallWarning
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
    proc = run_py("""
        import logging, hpu_shim
        logging.basicConfig(level=logging.WARNING)
        before = hpu_shim.status()["backend_requested"]
        st = hpu_shim.install(backend="cpu", strict=True)
        print(before, st["backend_requested"], st["strict"], st["installed"])
    """, env={"HPU_SHIM_BACKEND": "auto"})
    assert proc.stdout.split() == ["auto", "cpu", "True", "True"], proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr


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


SITE = str(REPO / "sitecustomize")


def test_no_import_runs_unshimmed_while_the_session_is_built(pkgs):
    """Resolution outside an import (a late install; here ensure_backend() on thread A) is paused half-way,
    right where the compat profile is chosen; thread B imports an in-scope module meanwhile. B must wait
    for the whole session, never run with the real torch.cuda (the sitecustomize case: torch not imported)."""
    (pkgs / "lmcache" / "race.py").write_text("import torch\nX = torch.cuda.is_available()\n")
    proc = run_py("""
        import sys, threading, time
        import hpu_shim.compat as compat
        from hpu_shim.runtime.runtime import RUNTIME
        from hpu_shim.testing.results import emit
        assert "torch" not in sys.modules and RUNTIME.installed
        name = "select" if hasattr(compat, "select") else "activate"
        original, paused, release = getattr(compat, name), threading.Event(), threading.Event()
        def pausing(*args, **kwargs):
            paused.set()
            assert release.wait(240)
            return original(*args, **kwargs)
        setattr(compat, name, pausing)
        a = threading.Thread(target=RUNTIME.ensure_backend)
        a.start()
        assert paused.wait(240)
        seen = {}
        b = threading.Thread(target=lambda: seen.update(X=__import__("lmcache.race").race.X))
        b.start()
        def importing(thread):  # B is inside the import machinery for lmcache.race
            frame = sys._current_frames().get(thread.ident)
            while frame is not None:
                if frame.f_code.co_filename == "<frozen importlib._bootstrap>":
                    return True
                frame = frame.f_back
            return False
        deadline = time.monotonic() + 240
        while b.is_alive() and not importing(b) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        a.join(240); b.join(240)
        emit({"X": seen.get("X"), "shimmed": "lmcache.race" in RUNTIME.status()["shimmed_modules"]})
    """, path=[pkgs], env={"PYTHONPATH": SITE, "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"})
    assert proc.results == [{"X": True, "shimmed": True}], proc.stderr


def test_bootstrap_with_backend_hpu_stays_lazy(pkgs):
    """HPU_SHIM_BACKEND=hpu on a host without an HPU: start-up imports no torch and logs nothing;
    the first in-scope import says clearly why it cannot run."""
    proc = run_py("""
        import sys
        from hpu_shim.testing.results import emit
        import hpu_shim
        emit({"torch": "torch" in sys.modules, "state": hpu_shim.status()["state"]})
        try:
            import lmcache
        except Exception as exc:
            emit({"error": type(exc).__name__, "message": str(exc)})
    """, path=[pkgs], env={"PYTHONPATH": SITE, "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "hpu"})
    assert proc.results[0] == {"torch": False, "state": "pending"}, proc.stderr
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.results[1]["error"] == "BackendUnavailable", proc.results
    assert "HPU_SHIM_BACKEND=hpu requires an HPU" in proc.results[1]["message"]


def test_runtime_is_a_thin_composition():
    """Issue 12's bound: life cycle, resolution, environment, retrofit and the exit report live elsewhere."""
    import inspect

    from hpu_shim.runtime.runtime import Runtime

    assert len(inspect.getsourcelines(Runtime)[0]) < 150
