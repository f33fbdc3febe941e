"""Fixtures for the HPU emulator tests.

In-process tests use ``emulated_hpu`` (installed once per pytest process). Anything
that depends on process-wide state (lazy mode, install refusals, first-call warnings)
runs in a fresh interpreter through ``run_py``.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from hpu_shim.testing.pytest_plugin import emulated_hpu  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def _child_env(extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HPU_SHIM_FAKE_HPU", "PT_HPU_LAZY_MODE", "HPU_SHIM_FAKE_HPU_MEMORY")}
    env["HPU_SHIM"] = "0"
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


@pytest.fixture
def run_py():
    """Run code in a fresh interpreter; returns CompletedProcess (asserts rc==0 unless told).

    What the child hands back with ``hpu_shim.testing.results.emit`` is in ``proc.results`` (a file,
    never its stdout).
    """
    from hpu_shim.testing import results

    def run(code, env=None, expect_rc=0, timeout=300):
        with tempfile.TemporaryDirectory(prefix="hpu-shim-result-") as tmp:
            child_env = _child_env(env)
            child_env[results.ENV] = os.path.join(tmp, "results.jsonl")
            proc = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(code)], env=child_env,
                capture_output=True, text=True, timeout=timeout, cwd=str(REPO), check=False,
            )
            proc.results = results.read(child_env[results.ENV])
        if expect_rc is not None:
            assert proc.returncode == expect_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run
