"""hpu_shim.compat.remote: a silent store bounds LMCache's waits; close drains instead of deadlocking.

The fix-ups are applied to modules shaped like LMCache's own (the lines quoted below are LMCache
0.3.7 - 0.5.6's), with a real event loop thread and real sockets. The same fix-ups on real LMCache
releases against real servers (frozen with SIGSTOP, killed) are ``tests/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import types

import pytest

from hpu_shim.compat import remote
from hpu_shim.core.patches import PatchRegistry
from hpu_shim.runtime.config import load

BOUND = 0.5


class Ctx:
    def __init__(self, timeout: float = BOUND):
        self.patches = PatchRegistry()
        self.config = load({"HPU_SHIM_REMOTE_TIMEOUT": str(timeout)})


@pytest.fixture
def loop():
    """LMCache's storage event loop: its own thread, as StorageManager runs it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class FrozenConnection:
    """A store that never answers (a SIGSTOPped server): every request awaits for ever."""

    def __init__(self):
        self.closed = False

    async def exists(self, key):
        await asyncio.Event().wait()

    async def get(self, key):
        await asyncio.Event().wait()

    async def close(self):
        await asyncio.Event().wait()


class HealthyConnection:
    async def exists(self, key):
        return True

    async def get(self, key):
        return f"obj-{key}"

    async def close(self):
        return None


def remote_backend_module():
    """The shape of ``lmcache.v1.storage_backend.remote_backend`` that the fix-up relies on."""
    module = types.ModuleType("lmcache.v1.storage_backend.remote_backend")
    module.asyncio = asyncio

    class RemoteBackend:
        def __init__(self, loop, connection, factory=None):
            self.loop, self.connection, self.lock = loop, connection, threading.Lock()
            self.remote_url, self.min_reconnect_interval, self.failure_time = "lm://test", 0.2, -1e9
            self.blocking_timeout_secs, self.factory = 10, factory

        def init_connection(self):  # remote_backend.py: re-created after min_reconnect_interval
            if self.connection is None and time.time() - self.failure_time >= self.min_reconnect_interval:
                self.connection = self.factory()

        def contains(self, key, pin=False):
            if self.connection is None:
                return False
            try:  # remote_backend.py (0.3.7: 154-158, 0.5.6: 178-182): no timeout
                future = module.asyncio.run_coroutine_threadsafe(self.connection.exists(key), self.loop)
                return future.result()
            except Exception:
                return False

        def get_blocking(self, key):
            if self.connection is None:
                return None
            future = module.asyncio.run_coroutine_threadsafe(self.connection.get(key), self.loop)
            try:
                return future.result(self.blocking_timeout_secs)
            except Exception:
                return None

        def close(self):
            try:
                future = module.asyncio.run_coroutine_threadsafe(self.connection.close(), self.loop)
                future.result()
            except Exception:
                pass

    module.RemoteBackend = RemoteBackend
    return module


def test_a_frozen_store_is_a_bounded_miss_with_one_warning(loop, caplog):
    module, ctx = remote_backend_module(), Ctx()
    remote.fix_remote_backend(module, ctx)
    backend = module.RemoteBackend(loop, FrozenConnection(), factory=HealthyConnection)
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        t0 = time.perf_counter()
        assert backend.contains("k") is False
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert backend.get_blocking("k") is None  # the connection was dropped: an immediate miss
        second = time.perf_counter() - t0
    assert BOUND * 0.9 <= first < BOUND + 5 and second < BOUND
    assert backend.connection is None
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "hpu_shim"]
    assert "lm://test" in msg and "HPU_SHIM_REMOTE_TIMEOUT" in msg and "miss" in msg


def test_the_connection_is_recreated_after_the_retry_interval(loop):
    module, ctx = remote_backend_module(), Ctx()
    remote.fix_remote_backend(module, ctx)
    backend = module.RemoteBackend(loop, FrozenConnection(), factory=HealthyConnection)
    assert backend.contains("k") is False
    deadline = time.monotonic() + 10
    while not backend.contains("k"):  # polls: the retry interval is 0.2 s, the reconnect runs on a thread
        assert time.monotonic() < deadline, "never reconnected"
    assert backend.get_blocking("x") == "obj-x"
    assert backend._hpu_shim_outage is False  # the next timeout warns again


def test_a_shorter_lmcache_timeout_still_wins_and_answers_pass_through(loop):
    module, ctx = remote_backend_module(), Ctx(timeout=30)
    remote.fix_remote_backend(module, ctx)
    backend = module.RemoteBackend(loop, FrozenConnection())
    backend.blocking_timeout_secs = 0.2
    t0 = time.perf_counter()
    assert backend.get_blocking("k") is None
    assert time.perf_counter() - t0 < 5
    healthy = module.RemoteBackend(loop, HealthyConnection())
    assert healthy.contains("k") is True and healthy.get_blocking("k") == "obj-k"


def test_close_is_bounded(loop, caplog):
    module, ctx = remote_backend_module(), Ctx()
    remote.fix_remote_backend(module, ctx)
    backend = module.RemoteBackend(loop, FrozenConnection())
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        t0 = time.perf_counter()
        backend.close()
    assert time.perf_counter() - t0 < BOUND + 5
    assert any("close did not finish" in r.getMessage() for r in caplog.records)


def test_futures_outside_a_bounded_call_are_lmcaches_own(loop):
    """Puts are never waited on by the bound: only contains/get/close are."""
    bounded = remote.BoundedAsyncio()
    future = bounded.run_coroutine_threadsafe(asyncio.sleep(0, "put"), loop)
    assert type(future).__module__ == "concurrent.futures._base" and future.result(10) == "put"
    assert bounded.Event is asyncio.Event  # everything else is the real module


def test_uninstall_restores_lmcaches_methods(loop):
    module, ctx = remote_backend_module(), Ctx()
    original = module.RemoteBackend.contains
    remote.fix_remote_backend(module, ctx)
    assert module.RemoteBackend.contains is not original and module.asyncio is not asyncio
    ctx.patches.restore_all()
    assert module.RemoteBackend.contains is original and module.asyncio is asyncio


def test_lm_socket_times_out_instead_of_blocking_the_loop_for_ever():
    """A listener that accepts and never answers: LMCache's blocking recv returns after the bound."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    module = types.ModuleType("lmcache.v1.storage_backend.connector.lm_connector")
    module.asyncio, module.socket = asyncio, socket

    class LMCServerConnector:  # lm_connector.py: socket.socket(); connect((host, port)); recv on the loop
        def __init__(self, host, port):
            self.client_socket = module.socket.socket(module.socket.AF_INET, module.socket.SOCK_STREAM)
            self.client_socket.connect((host, port))

    module.LMCServerConnector = LMCServerConnector
    remote.fix_lm_connector(module, Ctx())
    assert module.socket.AF_INET == socket.AF_INET and module.socket.__wrapped__ is socket
    conn = LMCServerConnector(*server.getsockname())
    try:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            conn.client_socket.recv(28)
        assert time.perf_counter() - t0 < BOUND + 5
    finally:
        conn.client_socket.close()
        server.close()


def pq_executor_module():
    """LMCache's AsyncPQExecutor.shutdown (job_executor/pq_executor.py, 0.3.7 - 0.5.6): blocking."""
    module = types.ModuleType("lmcache.v1.storage_backend.job_executor.pq_executor")

    class AsyncPQExecutor:
        def __init__(self, loop):
            self.loop, self.drained = loop, False

        async def shutdown_async(self, wait=True):
            await asyncio.sleep(0)
            self.drained = True

        def shutdown(self, wait=True):
            future = asyncio.run_coroutine_threadsafe(self.shutdown_async(wait), self.loop)
            self.pending = future  # (not LMCache's: lets the negative control free the loop afterwards)
            if wait:
                future.result()

    module.AsyncPQExecutor = AsyncPQExecutor
    return module


def test_awaiting_shutdown_on_the_executors_loop_drains_instead_of_deadlocking(loop):
    module = pq_executor_module()
    remote.fix_pq_executor(module, Ctx())
    executor = module.AsyncPQExecutor(loop)

    async def close():  # RedisConnector.close: `await self.pq_executor.shutdown(wait=True)`
        await executor.shutdown(wait=True)

    asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    assert executor.drained
    other = module.AsyncPQExecutor(loop)
    other.shutdown(wait=True)  # from another thread it blocks until drained, as before
    assert other.drained


def test_without_the_fix_the_same_close_deadlocks(loop):
    """Negative control: LMCache's own shutdown, awaited on its loop, never returns."""
    executor = pq_executor_module().AsyncPQExecutor(loop)

    async def close():
        await executor.shutdown(wait=True)

    future = asyncio.run_coroutine_threadsafe(close(), loop)
    import concurrent.futures

    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(1.0)
    assert not executor.drained  # the loop thread is stuck inside shutdown(), waiting for itself
    executor.pending.cancel()  # free the loop for the fixture's teardown
    with pytest.raises((asyncio.CancelledError, concurrent.futures.CancelledError)):
        future.result(10)


@pytest.mark.parametrize("url, fixed", [
    ("fs:///mnt/shared-kv/lmcache", "fs://localhost:0/mnt/shared-kv/lmcache"),
    ("fs://localhost:0/mnt/kv", "fs://localhost:0/mnt/kv"),
    ("lm://127.0.0.1:65432", "lm://127.0.0.1:65432"),
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
])
def test_fs_urls(url, fixed):
    assert remote.normalize_fs_url(url) == fixed


def test_fs_adapter_parses_the_bare_form(caplog):
    from urllib.parse import urlparse

    def parse_remote_url(url):  # connector/__init__.py: asserts a host and a port
        parsed = urlparse(url)
        assert parsed.hostname is not None, f"Invalid URL {url}: missing host"
        assert parsed.port is not None, f"Invalid URL {url}: missing port"
        return parsed

    module = types.ModuleType("lmcache.v1.storage_backend.connector.fs_adapter")
    module.parse_remote_url = parse_remote_url
    with pytest.raises(AssertionError, match="missing host"):
        module.parse_remote_url("fs:///mnt/kv")
    remote.fix_fs_url(module, Ctx())
    assert module.parse_remote_url("fs:///mnt/kv").path == "/mnt/kv"


def test_reconnecting_never_blocks_the_caller(loop):
    """init_connection to an unreachable host can take minutes: it runs on its own thread."""
    module, ctx = remote_backend_module(), Ctx()
    remote.fix_remote_backend(module, ctx)
    release = threading.Event()

    def slow_factory():
        release.wait(30)
        return HealthyConnection()

    backend = module.RemoteBackend(loop, None, factory=slow_factory)
    t0 = time.perf_counter()
    assert backend.contains("k") is False and backend.contains("k") is False  # one reconnect in flight
    assert time.perf_counter() - t0 < 2
    release.set()
    deadline = time.monotonic() + 10
    while not backend.contains("k"):
        assert time.monotonic() < deadline, "never reconnected"
