"""How a child process hands its result to the parent: a file of JSON lines, never shared stdout.

A driver run in a child (LMCache round trips, vLLM runs, the 0.3.7 adapter driver) may itself start
processes -- vLLM's EngineCore and workers -- that inherit its stdout and write logs at any time,
even onto the same line as a result. So results go to the file named by ``HPU_SHIM_RESULT_FILE``
(one JSON object per line, each written with a single ``write`` and flushed), and the parent reads
that file after the child exited. Without the variable (someone running a driver by hand) a result
is printed as a ``RESULT {json}`` line for humans; no test reads that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Sequence

__all__ = ["ENV", "emit", "read", "run_child", "ChildResult"]

ENV = "HPU_SHIM_RESULT_FILE"


def emit(result: Any) -> None:
    """Append ``result`` as one JSON line to ``$HPU_SHIM_RESULT_FILE`` (or print it for a human)."""
    line = json.dumps(result, default=str) + "\n"
    path = os.environ.get(ENV)
    if not path:
        sys.stdout.write("RESULT " + line)
        sys.stdout.flush()
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str | os.PathLike) -> list[dict]:
    """Every result a child emitted into ``path``, in order (an absent file means none)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


class ChildResult:
    """A finished child: its results (from the file), exit code and captured output for diagnostics."""

    def __init__(self, proc: subprocess.CompletedProcess, results: list[dict]):
        self.proc = proc
        self.results = results
        self.returncode = proc.returncode
        self.stdout = proc.stdout or ""
        self.stderr = proc.stderr or ""

    def diagnostics(self, limit: int = 6000) -> str:
        return (f"rc={self.returncode}\n--- stdout (tail) ---\n{self.stdout[-limit:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-limit:]}")

    def one(self) -> dict:
        """The single result the child was expected to emit; a clear failure otherwise."""
        if len(self.results) != 1:
            raise AssertionError(f"expected exactly one result from the child, got {len(self.results)}\n"
                                 + self.diagnostics())
        return self.results[0]


def run_child(cmd: Sequence[str], *, env: dict, timeout: float, cwd: Any = None) -> ChildResult:
    """Run ``cmd`` with a fresh result file in its environment; return its results and output."""
    with tempfile.TemporaryDirectory(prefix="hpu-shim-result-") as tmp:
        path = os.path.join(tmp, "results.jsonl")
        child_env = dict(env)
        child_env[ENV] = path
        proc = subprocess.run(list(cmd), env=child_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return ChildResult(proc, read(path))
