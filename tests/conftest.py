"""Shared fixtures. The pytest process itself runs with HPU_SHIM=0 so that importing
hpu_shim does not install it; tests install explicitly or run a fresh interpreter."""

from __future__ import annotations

import os
import sys

os.environ["HPU_SHIM"] = "0"
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")

import pytest  # noqa: E402

from _helpers import CUDA_PKG  # noqa: E402

pytest_plugins = ["hpu_shim.testing.pytest_plugin"]


# -- CI honesty: a skip is a failure (a missing prerequisite must never pass as "nothing to test") ----------
def _skip_is_failure(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        where = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and this suite treats a skip as a failure (fix the prerequisite): {where}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _skip_is_failure((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _skip_is_failure((yield).get_result())


# -- parallel runs (make test: pytest -n 2 --dist loadgroup) ------------------------------------------------
#: Modules whose cases batch into one child per (release, mode) (``lmcache_roundtrip.SHARED``): one worker
#: runs them all, so no child runs twice.
SHARED_MODULES = {"test_lmcache_releases.py", "test_properties.py", "test_connector.py", "test_cpu_connector.py",
                  "test_native_connector.py"}
#: Modules sharing the cross-process runs of the ``handoff`` fixture.
HANDOFF_MODULES = {"test_hetero.py", "test_faults.py"}


def pytest_collection_modifyitems(config, items):
    """One xdist group per test module (its module-scoped fixtures run once), one for the SHARED modules."""
    for item in items:
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            name = item.path.name
            group = ("lmcache-shared" if name in SHARED_MODULES else "handoff" if name in HANDOFF_MODULES
                     else str(item.path.relative_to(config.rootpath)))
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def handoff(tmp_path_factory):
    """``handoff(version)``: one cross-process run per release (``hetero_run.cached``), shared by
    test_hetero.py and test_faults.py; the releases in ``FAULT_RELEASES`` also run the fault specs."""
    from test_hetero import ENVS, FAULT_RELEASES

    from hpu_shim.testing import hetero_run

    def get(version: str) -> dict:
        try:
            hetero_run.release_path(version, ENVS)
        except FileNotFoundError as exc:  # a missing prerequisite fails, never skips
            pytest.fail(str(exc))
        return hetero_run.cached(version, ENVS, lambda: tmp_path_factory.mktemp(f"hetero-{version}"),
                                 faults=version in FAULT_RELEASES)
    return get


@pytest.fixture
def pkgs(tmp_path):
    """A tmp dir with `lmcache` (in scope), `otherpkg` and `lmcache_vllm` (out of scope)."""
    for name in ("lmcache", "otherpkg", "lmcache_vllm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(CUDA_PKG)
        (tmp_path / name / "sub.py").write_text("import torch\ndef avail():\n    return torch.cuda.is_available()\n")
    return tmp_path


@pytest.fixture
def shim(pkgs, monkeypatch):
    """In-process shim on the cpu backend with `pkgs` importable; fully undone afterwards."""
    import hpu_shim

    monkeypatch.syspath_prepend(str(pkgs))
    before = set(sys.modules)
    yield hpu_shim
    hpu_shim.uninstall()
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("lmcache", "otherpkg", "lmcache_vllm"):
            del sys.modules[name]
