"""hpu_shim.runtime.config: every variable parses, and every bad value names variable, value and choices."""

import dataclasses

import pytest

from hpu_shim.runtime import config as _config
from hpu_shim.runtime.config import ShimConfigError

from _helpers import run_py


def test_defaults():
    c = _config.load({})
    assert (c.enabled, c.scope, c.backend, c.strict, c.report_path, c.log_level) == (
        None, ("lmcache",), "auto", False, None, None)
    assert (c.native_connector, c.remote_timeout) == (False, 5.0)


def test_values_parse(tmp_path):
    c = _config.load({"HPU_SHIM": "1", "HPU_SHIM_SCOPE": " lmcache , my_pkg,lmcache", "HPU_SHIM_BACKEND": "CPU",
                      "HPU_SHIM_STRICT": "1", "HPU_SHIM_REPORT": str(tmp_path / "r.jsonl"),
                      "HPU_SHIM_LOG_LEVEL": "debug"})
    assert c.enabled is True and c.scope == ("lmcache", "my_pkg") and c.backend == "cpu"
    assert c.strict is True and c.report_path.endswith("r.jsonl") and c.log_level == "DEBUG"


def test_native_connector_and_remote_timeout_parse_and_export():
    c = _config.load({"HPU_SHIM_NATIVE_CONNECTOR": "1", "HPU_SHIM_REMOTE_TIMEOUT": " 0.25 "})
    assert c.native_connector is True and c.remote_timeout == 0.25
    exported = c.env_exports()
    assert exported["HPU_SHIM_NATIVE_CONNECTOR"] == "1" and float(exported["HPU_SHIM_REMOTE_TIMEOUT"]) == 0.25
    assert _config.load(exported) == dataclasses.replace(c, enabled=True)  # a child reads back the same config


def test_explicit_arguments_win():
    c = _config.load({"HPU_SHIM_BACKEND": "hpu", "HPU_SHIM_SCOPE": "a"}, scope=["b", "c"], backend="cpu", strict=True)
    assert (c.scope, c.backend, c.strict) == (("b", "c"), "cpu", True)


BAD = [
    ("HPU_SHIM", "yes", "0 or 1"),
    ("HPU_SHIM_SCOPE", "lmcache.v1", "package names"),
    ("HPU_SHIM_SCOPE", "lm-cache", "package names"),
    ("HPU_SHIM_SCOPE", ",", "package names"),
    ("HPU_SHIM_SCOPE", "class", "package names"),
    ("HPU_SHIM_BACKEND", "gpu", "auto, hpu, cpu"),
    ("HPU_SHIM_STRICT", "true", "0 or 1"),
    ("HPU_SHIM_REPORT", "/nonexistent-dir/x.jsonl", "existing directory"),
    ("HPU_SHIM_LOG_LEVEL", "loud", "DEBUG"),
    ("HPU_SHIM_NATIVE_CONNECTOR", "yes", "0 or 1"),
    ("HPU_SHIM_REMOTE_TIMEOUT", "0", "seconds > 0"),
    ("HPU_SHIM_REMOTE_TIMEOUT", "-1", "seconds > 0"),
    ("HPU_SHIM_REMOTE_TIMEOUT", "nan", "seconds > 0"),
    ("HPU_SHIM_REMOTE_TIMEOUT", "5s", "seconds > 0"),
    ("HPU_SHIM_FAKE_HPU", "true", "0 or 1"),
    ("HPU_SHIM_SCOPE", "torch", "never in scope"),
    ("HPU_SHIM_SCOPE", "lmcache,os", "never in scope"),
]
#: one row per variable for the fresh-interpreter checks (each costs an interpreter start)
BAD_ONCE = list({var: (var, value, accepted) for var, value, accepted in BAD}.values())


@pytest.mark.parametrize("var,value,accepted", BAD)
def test_bad_value_message(var, value, accepted):
    with pytest.raises(ShimConfigError) as err:
        _config.load({var: value})
    msg = str(err.value)
    assert var in msg and repr(value) in msg and accepted in msg


@pytest.mark.parametrize("var,value,accepted", BAD_ONCE)
def test_bad_value_on_import_raises_clearly(var, value, accepted):
    env = {"HPU_SHIM": "1", var: value}
    proc = run_py("import hpu_shim", env=env, check=False)
    assert proc.returncode != 0
    assert "ShimConfigError" in proc.stderr and var in proc.stderr and accepted in proc.stderr


@pytest.mark.parametrize("var,value,accepted", BAD_ONCE)
def test_bad_value_under_sitecustomize_is_logged_and_idle(var, value, accepted):
    from _helpers import REPO

    env = {"HPU_SHIM": "1", var: value, "PYTHONPATH": str(REPO / "sitecustomize")}
    proc = run_py("""
        import sys, sitecustomize
        assert sitecustomize.loaded is False
        shim = sys.modules.get("hpu_shim")
        assert shim is None or shim.status()["installed"] is False, shim.status()
        print("IDLE")
    """, env=env)
    assert "IDLE" in proc.stdout
    assert var in proc.stderr and accepted in proc.stderr and "stays idle" in proc.stderr


def test_bad_install_arguments():
    import hpu_shim

    with pytest.raises(ShimConfigError, match="install\\(backend=...\\)='cuda'.*auto, hpu, cpu"):
        hpu_shim.install(backend="cuda")
    with pytest.raises(ShimConfigError, match="strict"):
        hpu_shim.install(strict="yes")
    with pytest.raises(ShimConfigError, match="package names"):
        hpu_shim.install(scope="lmcache.v1")
    assert hpu_shim.status()["installed"] is False


@pytest.mark.parametrize("scope", ["torch", "hpu_shim", "habana_frameworks", "json", "lmcache,collections"])
def test_scope_never_covers_torch_the_shim_or_the_standard_library(scope):
    with pytest.raises(ShimConfigError, match="never in scope"):
        _config.load({"HPU_SHIM_SCOPE": scope})
    with pytest.raises(ShimConfigError, match="never in scope"):
        _config.load({}, scope=scope.split(","))


@pytest.mark.parametrize("value", ["true", "yes", "2"])
def test_fake_hpu_is_validated(value):
    with pytest.raises(ShimConfigError, match="HPU_SHIM_FAKE_HPU=.* accepted values: 0 or 1"):
        _config.load({"HPU_SHIM_FAKE_HPU": value})


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ShimConfigError) as err:
        _config.load({"HPU_SHIM_BACKEND": "x" * 100000})
    msg = str(err.value)
    assert len(msg) < 400 and "100000 characters" in msg and "auto, hpu, cpu" in msg


def test_report_path_is_absolute_when_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _config.load({"HPU_SHIM_REPORT": "r.jsonl"}).report_path == str(tmp_path / "r.jsonl")
    with pytest.raises(ShimConfigError, match="directory"):
        _config.load({"HPU_SHIM_REPORT": str(tmp_path)})
