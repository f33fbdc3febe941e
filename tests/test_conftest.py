"""tests/conftest.py: a skip in this suite is a failure, so CI cannot pass by testing nothing.

The rule is checked on a throw-away test file run by a real pytest with this suite's conftest loaded as a
plugin: a skip at run time, a ``skipif`` mark and an ``importorskip`` at collection all fail; a passing
test and an ``xfail`` keep their outcome.
"""

from __future__ import annotations

import subprocess
import sys

from _helpers import REPO, clean_env

CASES = '''
import pytest

def test_skip_at_run_time():
    pytest.skip("prerequisite missing")

@pytest.mark.skipif(True, reason="condition")
def test_skipif():
    pass

def test_passes():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False
'''


def run_pytest(tmp_path, name: str, body: str) -> subprocess.CompletedProcess:
    (tmp_path / name).write_text(body)
    env = clean_env(PYTHONPATH=f"{REPO / 'tests'}:{REPO}")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "conftest", "-p", "no:cacheprovider",
                           str(tmp_path / name)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_skips_fail_passes_and_xfails_keep_their_outcome(tmp_path):
    proc = run_pytest(tmp_path, "test_cases.py", CASES)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in out, out
    assert "FAILED test_cases.py::test_skip_at_run_time" in out and "ERROR test_cases.py::test_skipif" in out
    rule = "skipped, and this suite treats a skip as a failure (fix the prerequisite): Skipped: "
    assert rule + "prerequisite missing" in out and rule + "condition" in out, out


def test_importorskip_at_collection_fails(tmp_path):
    proc = run_pytest(tmp_path, "test_missing.py", "import pytest\npytest.importorskip('no_such_module_hpu_shim')\n")
    assert proc.returncode != 0 and "skipped, and this suite treats a skip as a failure" in proc.stdout, proc.stdout
    assert "no_such_module_hpu_shim" in proc.stdout
