"""LMCache's remote storage hazards, bounded inside LMCache: a dead store is a miss, never a hang.

Measured on LMCache 0.3.7 - 0.5.6 with real servers (``docs/hetero.md``, "Faults"):

* ``RemoteBackend.contains`` waits on ``future.result()`` with no timeout: a frozen server (SIGSTOP,
  a hung node) hangs the decode process forever. ``get_blocking`` waits ``blocking_timeout_secs``
  (10 s by default) per chunk.
* LMCache's ``lm://`` client reads its socket with blocking ``recv`` *on the event loop thread*: one
  unanswered request blocks every later put, get and close of that engine. After a late answer the
  stream is out of step, so a connection that timed out must never be reused.
* ``RemoteBackend.close()`` with Redis never returns: ``RedisConnector.close`` awaits
  ``pq_executor.shutdown()``, a *blocking* method that schedules the drain on the very event loop
  it is blocking (a self-deadlock; the s3, mock, eic and sagemaker connectors share it).
* ``fs:///path`` (the form shared-filesystem guides use) fails LMCache's URL parser ("missing
  host"); the remote backend is then silently absent and every chunk dropped, while the engine still
  logs "Stored N out of total N tokens".

The fix-ups (``fixup(module, ctx)``, registered in ``hpu_shim.compat``):

* ``fix_remote_backend``: ``contains``, ``batched_contains``, ``get_blocking``,
  ``batched_get_blocking`` and ``close`` wait at most ``HPU_SHIM_REMOTE_TIMEOUT`` seconds (default 5)
  for the store (``ctx.config.remote_timeout``; a shorter LMCache ``blocking_timeout_secs`` still
  wins). A timeout is a miss: one WARNING per outage, the connection is dropped (never reused out
  of step) and re-created in the background after LMCache's own retry interval.
* ``fix_lm_connector``: the ``lm://`` client's sockets get the same timeout, so neither its
  ``connect`` nor its ``recv`` on the event loop thread can block for ever.
* ``fix_pq_executor``: ``shutdown()`` called from a coroutine on the executor's own loop returns the
  drain coroutine (so ``await executor.shutdown()`` drains and returns) instead of deadlocking;
  called from any other thread it blocks as before.
* ``fix_fs_url``: ``fs:///path`` is read as ``fs://localhost:0/path``, LMCache's documented form.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from typing import Any

__all__ = ["timeout_of", "BoundedAsyncio", "TimeoutSockets", "fix_remote_backend", "fix_lm_connector",
           "fix_pq_executor", "fix_fs_url", "normalize_fs_url"]

log = logging.getLogger("hpu_shim")

DEFAULT_TIMEOUT = 5.0
#: RemoteBackend methods that wait for the store, and how a timeout reads in the WARNING.
BOUNDED_METHODS = {
    "contains": "a lookup (contains)",
    "batched_contains": "a lookup (batched_contains)",
    "get_blocking": "a retrieve (get)",
    "batched_get_blocking": "a retrieve (batched get)",
    "close": "close",
}
_tls = threading.local()


def timeout_of(ctx: Any) -> float:
    """``HPU_SHIM_REMOTE_TIMEOUT`` as parsed by the runtime config (seconds)."""
    value = getattr(getattr(ctx, "config", None), "remote_timeout", None)
    return float(value) if value else DEFAULT_TIMEOUT


class _Section:
    """One bounded call: its time limit, and whether a wait inside it ran out."""

    __slots__ = ("bound", "timed_out")

    def __init__(self, bound: float):
        self.bound, self.timed_out = bound, False


class _BoundedFuture:
    """A ``concurrent.futures.Future`` whose ``result()`` never waits longer than the section's bound."""

    def __init__(self, future: concurrent.futures.Future, section: _Section):
        self._future, self._section = future, section

    def result(self, timeout: float | None = None) -> Any:
        bound = self._section.bound if timeout is None else min(timeout, self._section.bound)
        try:
            return self._future.result(bound)
        except concurrent.futures.TimeoutError:
            self._future.cancel()
            self._section.timed_out = True
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future, name)


class BoundedAsyncio:
    """What LMCache's remote modules see as ``asyncio``: the real module, except that a future made
    by ``run_coroutine_threadsafe`` inside a bounded call waits at most the bound."""

    __hpu_shim__ = "asyncio with bounded run_coroutine_threadsafe futures"

    def __init__(self, real: Any = asyncio):
        self._real = real

    def run_coroutine_threadsafe(self, coro: Any, loop: Any) -> Any:
        future = self._real.run_coroutine_threadsafe(coro, loop)
        section = getattr(_tls, "section", None)
        return future if section is None else _BoundedFuture(future, section)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _abort(connection: Any) -> None:
    """Unblock and drop a connection that timed out (an lm:// socket is shut down both ways)."""
    sock = getattr(connection, "client_socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _on_timeout(backend: Any, method: str, bound: float) -> None:
    """A wait ran out: drop the connection (LMCache may have done so already) and warn once per outage."""
    if method == "close":
        log.warning("LMCache remote storage %s: close did not finish within %.3g s (HPU_SHIM_REMOTE_TIMEOUT); "
                    "abandoned so the process can exit", getattr(backend, "remote_url", "?"), bound)
        return
    lock = getattr(backend, "lock", None) or threading.Lock()
    with lock:
        connection = backend.connection
        backend.connection = None
        backend.failure_time = time.time()
    if connection is not None:
        _abort(connection)
    if getattr(backend, "_hpu_shim_outage", False):
        return
    backend._hpu_shim_outage = True
    retry = getattr(backend, "min_reconnect_interval", None)
    log.warning("LMCache remote storage %s did not answer %s within %.3g s (HPU_SHIM_REMOTE_TIMEOUT): treated as "
                "a miss, the rest is recomputed. The connection is dropped%s.", getattr(backend, "remote_url", "?"),
                BOUNDED_METHODS[method], bound,
                f" and re-created on a later call after {retry} s" if retry is not None else "")


def _maybe_reconnect(backend: Any) -> None:
    """After a drop, re-create the connection once LMCache's own retry interval has passed -- on a
    thread of its own: connecting to an unreachable host may take minutes, and the caller (vLLM's
    scheduler) must not wait for it. Until it succeeds, calls are misses."""
    if backend.connection is not None or not hasattr(backend, "init_connection"):
        return
    interval = getattr(backend, "min_reconnect_interval", 10)
    if time.time() - getattr(backend, "failure_time", 0) < interval:
        return
    lock = getattr(backend, "lock", None) or threading.Lock()
    with lock:
        if getattr(backend, "_hpu_shim_reconnecting", False):
            return
        backend._hpu_shim_reconnecting = True

    def reconnect() -> None:
        try:
            backend.init_connection()
        finally:
            backend._hpu_shim_reconnecting = False

    threading.Thread(target=reconnect, name="hpu-shim-reconnect", daemon=True).start()


def _bounded(original: Any, method: str, bound_of: Any) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if method != "close":
            _maybe_reconnect(self)
        bound = bound_of()
        section = _Section(bound)
        previous = getattr(_tls, "section", None)
        _tls.section = section
        try:
            return original(self, *args, **kwargs)
        finally:
            _tls.section = previous
            if section.timed_out:
                _on_timeout(self, method, bound)
            elif method != "close" and self.connection is not None:
                self._hpu_shim_outage = False  # answered in time: a later timeout is a new outage

    call.__wrapped__ = original  # type: ignore[attr-defined]
    call.__name__ = original.__name__
    call.__doc__ = f"hpu_shim: {original.__qualname__} waits at most HPU_SHIM_REMOTE_TIMEOUT for the store."
    return call


def fix_remote_backend(module: Any, ctx: Any) -> None:
    """Bound every wait of ``RemoteBackend`` on the store (see the module docstring)."""
    backend = getattr(module, "RemoteBackend", None)
    if not isinstance(backend, type):
        return
    if getattr(module, "asyncio", None) is asyncio:
        ctx.patches.patch(module, "asyncio", BoundedAsyncio())
    bound_of = lambda: timeout_of(ctx)  # noqa: E731  (read at call time: config may be re-installed)
    for method in BOUNDED_METHODS:
        original = backend.__dict__.get(method)
        if callable(original):
            ctx.patches.patch(backend, method, _bounded(original, method, bound_of))


class TimeoutSockets:
    """What LMCache's ``lm://`` client sees as ``socket``: the real module, except that every socket it
    makes has a timeout -- its ``connect`` and its blocking ``recv`` on the event loop thread end."""

    __hpu_shim__ = "socket with HPU_SHIM_REMOTE_TIMEOUT on every socket"

    def __init__(self, bound_of: Any, real: Any = socket):
        self._real, self._bound_of, self.__wrapped__ = real, bound_of, real

    def socket(self, *args: Any, **kwargs: Any) -> socket.socket:
        sock = self._real.socket(*args, **kwargs)
        sock.settimeout(self._bound_of())
        return sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def fix_lm_connector(module: Any, ctx: Any) -> None:
    """``lm://``: socket timeouts, so a silent or unreachable server cannot block LMCache for ever."""
    if not isinstance(getattr(module, "LMCServerConnector", None), type):
        return
    if getattr(module, "asyncio", None) is asyncio:  # exists_sync waits on its own future
        ctx.patches.patch(module, "asyncio", BoundedAsyncio())
    if getattr(module, "socket", None) is socket:
        ctx.patches.patch(module, "socket", TimeoutSockets(lambda: timeout_of(ctx)))


def _drain_coroutine(executor: Any, wait: bool) -> Any:
    drain = getattr(executor, "shutdown_async", None) or getattr(executor, "_shutdown_async", None)
    return drain(wait=wait)


def fix_pq_executor(module: Any, ctx: Any) -> None:
    """``await executor.shutdown()`` from the executor's own loop drains instead of deadlocking."""
    for name in ("AsyncPQExecutor", "AsyncPQThreadPoolExecutor"):
        cls = getattr(module, name, None)
        original = cls.__dict__.get("shutdown") if isinstance(cls, type) else None
        if original is None or asyncio.iscoroutinefunction(original):
            continue
        ctx.patches.patch(cls, "shutdown", _shutdown_for(original))


def _shutdown_for(original: Any) -> Any:
    def shutdown(self: Any, wait: bool = True) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is getattr(self, "loop", None):
            # On the loop thread a blocking wait for the loop can never end: hand back the drain.
            return _drain_coroutine(self, wait)
        return original(self, wait)

    shutdown.__wrapped__ = original  # type: ignore[attr-defined]
    shutdown.__doc__ = "hpu_shim: awaitable when called on the executor's own loop (no self-deadlock)."
    return shutdown


def normalize_fs_url(url: str) -> str:
    """``fs:///path`` -> ``fs://localhost:0/path`` (LMCache's parser requires a host and a port)."""
    if isinstance(url, str) and url.startswith("fs:///"):
        return "fs://localhost:0/" + url[len("fs:///"):]
    return url


def fix_fs_url(module: Any, ctx: Any) -> None:
    """The fs adapter's ``parse_remote_url`` accepts ``fs:///path``."""
    original = getattr(module, "parse_remote_url", None)
    if not callable(original):
        return

    def parse_remote_url(url: str, *args: Any, **kwargs: Any) -> Any:
        fixed = normalize_fs_url(url)
        if fixed != url:
            log.info("hpu_shim: reading LMCache remote_url %r as %r (LMCache's parser needs host:port)", url, fixed)
        return original(fixed, *args, **kwargs)

    parse_remote_url.__wrapped__ = original  # type: ignore[attr-defined]
    ctx.patches.patch(module, "parse_remote_url", parse_remote_url)
