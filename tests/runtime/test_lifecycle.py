"""hpu_shim.runtime.lifecycle: the audit report survives SIGTERM, fork and chdir, and never hangs the exit."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from _helpers import REPO, clean_env, run_py

ENV = {"HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"}


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def _count(path, api="torch.cuda.current_device") -> int:
    return sum(r["count"] for r in _rows(path) if r["api"] == api)


def _wait_for(path, proc, deadline_s=240):
    deadline = time.monotonic() + deadline_s
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never became ready"
        time.sleep(0.05)


def _start(code: str, pkgs, report, ready, **env) -> subprocess.Popen:
    full = clean_env(PYTHONPATH=os.pathsep.join([str(pkgs), str(REPO)]), HPU_SHIM_REPORT=str(report),
                     READY=str(ready), **ENV, **env)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


WAIT_FOR_SIGTERM = """
    import os, signal, sys, threading
    import hpu_shim
    {before}
    import lmcache
    {after}
    for _ in range(3):
        lmcache.current_device()
    open(os.environ["READY"], "w").close()
    threading.Event().wait(600)
"""


def test_sigterm_under_the_default_handler_flushes_and_keeps_the_exit_status(pkgs, tmp_path):
    report, ready = tmp_path / "audit.jsonl", tmp_path / "ready"
    proc = _start(WAIT_FOR_SIGTERM.format(before="", after=""), pkgs, report, ready)
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGTERM, err
    assert _count(report) == 3 and {r["pid"] for r in _rows(report)} == {proc.pid}


def test_the_applications_own_sigterm_handler_is_kept(pkgs, tmp_path):
    """Like vLLM: the application installs its handler after the shim; the shim never takes it back."""
    report, ready = tmp_path / "audit.jsonl", tmp_path / "ready"
    after = "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))"
    proc = _start(WAIT_FOR_SIGTERM.format(before=after, after=""), pkgs, report, ready)
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 3, err  # the application's exit, and atexit still wrote the report
    assert _count(report) == 3


def test_the_report_is_bounded_and_lands_where_install_said(pkgs, tmp_path):
    """One process, three hazards: a FIFO without reader and a file another process keeps locked cost a
    bounded wait and a WARNING each (flush_report() and the exit run the same bounded write), and a
    relative HPU_SHIM_REPORT resolved at install survives a chdir before the exit."""
    fifo, locked = tmp_path / "audit.fifo", tmp_path / "locked.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with open(locked, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t0 = time.monotonic()
        proc = run_py(f"""
            import os, hpu_shim, lmcache
            lmcache.current_device()
            assert hpu_shim.flush_report({str(fifo)!r}) == 0
            assert hpu_shim.flush_report({str(locked)!r}) == 0
            os.chdir(os.path.join("..", "b"))
        """, path=[pkgs], env={**ENV, "HPU_SHIM_REPORT": "audit.jsonl"}, cwd=tmp_path / "a", timeout=120)
        elapsed = time.monotonic() - t0
    assert elapsed < 100
    assert "was not appended to HPU_SHIM_REPORT" in proc.stderr and "FIFO" in proc.stderr, proc.stderr
    assert "another process holds the file's lock" in proc.stderr, proc.stderr
    assert locked.read_text() == ""  # skipped and said so, not written unlocked
    assert _count(tmp_path / "a" / "audit.jsonl") == 1 and not (tmp_path / "b" / "audit.jsonl").exists()


def test_a_forked_child_does_not_write_its_parents_calls_again(pkgs, tmp_path):
    report = tmp_path / "audit.jsonl"
    run_py("""
        import os, sys
        import hpu_shim, lmcache
        for _ in range(3):
            lmcache.current_device()
        pid = os.fork()
        if pid == 0:
            for _ in range(2):
                lmcache.current_device()
            sys.exit(0)  # a normal exit: atexit runs in the child too
        assert os.waitpid(pid, 0)[1] == 0
    """, path=[pkgs], env={**ENV, "HPU_SHIM_REPORT": str(report)})
    rows = [r for r in _rows(report) if r["api"] == "torch.cuda.current_device"]
    assert sorted(r["count"] for r in rows) == [2, 3] and len({r["pid"] for r in rows}) == 2


def test_flush_report_then_exit_never_double_counts(pkgs, tmp_path):
    report = tmp_path / "audit.jsonl"
    run_py("""
        import hpu_shim, lmcache
        lmcache.current_device()
        assert hpu_shim.flush_report() >= 1
        lmcache.current_device()
    """, path=[pkgs], env={**ENV, "HPU_SHIM_REPORT": str(report)})
    assert _count(report) == 2
