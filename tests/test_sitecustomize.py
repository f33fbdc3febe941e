"""sitecustomize/sitecustomize.py: opt-in by env, never raises, chains, shims spawn children."""

import textwrap

import pytest

from _helpers import REPO, run_py

SITE = str(REPO / "sitecustomize")


def test_off_imports_nothing(pkgs):
    proc = run_py("""
        import sys, sitecustomize
        assert sitecustomize.loaded is False
        print(sorted(m for m in sys.modules if m.startswith(("hpu_shim", "torch", "logging", "wrapt"))))
    """, env={"PYTHONPATH": SITE})
    assert proc.stdout.strip() == "[]"


def test_on_installs_and_shims(pkgs):
    proc = run_py("""
        import sitecustomize, hpu_shim, lmcache, otherpkg, torch
        assert sitecustomize.loaded is True
        assert hpu_shim.status()["state"] == "active", hpu_shim.status()
        assert lmcache.AVAILABLE_AT_IMPORT is True and otherpkg.AVAILABLE_AT_IMPORT is False
        print("OK")
    """, path=[pkgs], env={"PYTHONPATH": SITE, "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"})
    assert "OK" in proc.stdout


def test_chains_to_user_sitecustomize(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("CORRECT_IMPORT = True\nimport os\nos.environ['USER_SITE_RAN'] = '1'\n")
    for switch in ("0", "1"):
        proc = run_py("""
            import os, sys, sitecustomize
            assert os.environ.get("USER_SITE_RAN") == "1"
            assert sitecustomize.chained.CORRECT_IMPORT is True
            assert sitecustomize.__file__.endswith("sitecustomize/sitecustomize.py")
            print("CHAINED", sitecustomize.loaded)
        """, env={"PYTHONPATH": f"{SITE}:{user}", "HPU_SHIM": switch, "HPU_SHIM_BACKEND": "cpu"})
        assert f"CHAINED {switch == '1'}" in proc.stdout


def test_failing_user_sitecustomize_does_not_crash(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("raise RuntimeError('user bug')\n")
    proc = run_py("import sitecustomize; print('ALIVE', sitecustomize.loaded)",
                  env={"PYTHONPATH": f"{SITE}:{user}", "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"})
    assert "ALIVE True" in proc.stdout and "user bug" in proc.stderr
    # the shim is on: the log must not say it stays idle
    assert "stays idle" not in proc.stderr and "hpu_shim is unaffected (installed)" in proc.stderr, proc.stderr


def test_python_S_disables_it():
    proc = run_py("import sys; print('hpu_shim' in sys.modules, 'sitecustomize' in sys.modules)",
                  env={"PYTHONPATH": SITE, "HPU_SHIM": "1"}, args=["-S"])
    assert proc.stdout.strip() == "False False"


def test_bootstrap_error_is_logged_not_raised():
    proc = run_py("import sitecustomize; print('ALIVE', sitecustomize.loaded)",
                  env={"PYTHONPATH": SITE, "HPU_SHIM": "yes"})
    assert "ALIVE False" in proc.stdout and "HPU_SHIM='yes'" in proc.stderr and "0 or 1" in proc.stderr


def test_spawn_child_is_shimmed(pkgs, tmp_path):
    script = tmp_path / "spawner.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp

        def child(q):
            import hpu_shim, lmcache
            q.put((hpu_shim.status()["state"], hpu_shim.status()["backend"], lmcache.AVAILABLE_AT_IMPORT))

        if __name__ == "__main__":
            import hpu_shim
            hpu_shim.install(backend="cpu")
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print("CHILD", q.get(timeout=120))
            p.join(timeout=60)
    """))
    # The parent only imports hpu_shim: the child must get the shim from the exported environment.
    proc = run_py(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", path=[pkgs],
                  env={"HPU_SHIM": "0"})
    assert "CHILD ('active', 'cpu', True)" in proc.stdout, proc.stdout + proc.stderr


def test_bootstrap_errors_leave_the_applications_logging_alone():
    """The error path used logging.basicConfig(), so the application's own basicConfig did nothing."""
    proc = run_py("""
        import logging
        logging.basicConfig(level=logging.INFO, format="APP %(levelname)s %(message)s")
        logging.getLogger("app").info("configured")
    """, env={"PYTHONPATH": SITE, "HPU_SHIM": "yes"})
    assert "APP INFO configured" in proc.stderr, proc.stderr
    assert "HPU_SHIM='yes' is not valid" in proc.stderr


@pytest.mark.parametrize("value", ["true", "yes", "2"])
def test_bad_fake_hpu_is_named_not_ignored(value):
    proc = run_py("import sitecustomize, sys; print('ALIVE', sitecustomize.loaded, 'torch' in sys.modules)",
                  env={"PYTHONPATH": SITE, "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu", "HPU_SHIM_FAKE_HPU": value})
    assert "ALIVE False False" in proc.stdout
    assert f"HPU_SHIM_FAKE_HPU={value!r} is not valid; accepted values: 0 or 1" in proc.stderr, proc.stderr
