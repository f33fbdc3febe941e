"""hpu_shim.testing.results: a child's result travels through its own file, never shared stdout, so a
child (or a grandchild it started) that writes logs onto the same line cannot corrupt it."""

from __future__ import annotations

import sys

from hpu_shim.testing import results

NOISY_CHILD = r"""
import subprocess, sys
from hpu_shim.testing.results import emit
sys.stdout.write("log without a newline ")             # what vLLM's shutdown log did to the RESULT line
emit({"n": 1, "text": "line\nbreak"})
sys.stdout.write("more log {\"n\": 2}\n")
subprocess.run([sys.executable, "-c", "from hpu_shim.testing.results import emit; emit({'n': 3})"], check=True)
"""


def test_results_come_from_the_file_whatever_stdout_holds():
    child = results.run_child([sys.executable, "-c", NOISY_CHILD], env=_env(), timeout=120)
    assert child.returncode == 0, child.diagnostics()
    assert child.results == [{"n": 1, "text": "line\nbreak"}, {"n": 3}]  # the grandchild inherits the file
    assert "log without a newline" in child.stdout


def test_one_names_what_the_child_did(tmp_path):
    child = results.run_child([sys.executable, "-c", "print('no result'); raise SystemExit(3)"], env=_env(),
                              timeout=120)
    try:
        child.one()
    except AssertionError as exc:
        assert "got 0" in str(exc) and "rc=3" in str(exc) and "no result" in str(exc)
    else:
        raise AssertionError("one() accepted a child that emitted nothing")
    assert results.read(tmp_path / "absent.jsonl") == []


def _env() -> dict:
    import os

    from _helpers import REPO

    return {**os.environ, "PYTHONPATH": str(REPO)}
