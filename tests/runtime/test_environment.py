"""hpu_shim.runtime.environment: the exported environment is restored exactly; one sanitiser."""

import os

from hpu_shim.runtime import environment
from hpu_shim.runtime.environment import bootstrap_dir


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


def test_clean_removes_the_shim_and_only_the_shim():
    site = bootstrap_dir()
    env = {"HPU_SHIM": "1", "HPU_SHIM_SCOPE": "x", "HPU_SHIM_RESULT_FILE": "r", "PATH": "/bin",
           "PYTHONPATH": os.pathsep.join([site, "/a", "/b"]), "PYTHONHASHSEED": "0"}
    assert environment.clean(env) == {"PATH": "/bin", "PYTHONPATH": os.pathsep.join(["/a", "/b"]), "PYTHONHASHSEED": "0"}
    assert environment.clean(env, pythonpath=False, X="1") == {"PATH": "/bin", "PYTHONHASHSEED": "0", "X": "1"}
    assert "PYTHONPATH" not in environment.clean({"PYTHONPATH": site})
    assert env["HPU_SHIM"] == "1"  # the input is never modified


def test_with_bootstrap_puts_it_first_once():
    site = bootstrap_dir()
    assert environment.with_bootstrap(None) == site
    assert environment.with_bootstrap(os.pathsep.join(["/x", site, ""])) == os.pathsep.join([site, "/x"])


def test_original_environ_is_what_doctor_reports(shim, monkeypatch):
    from hpu_shim.runtime.runtime import original_environ

    monkeypatch.setenv("HPU_SHIM_BACKEND", "auto")
    shim.install(backend="cpu")
    assert os.environ["HPU_SHIM_BACKEND"] == "cpu" and original_environ()["HPU_SHIM_BACKEND"] == "auto"
