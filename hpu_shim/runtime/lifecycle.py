"""The process's life around the shim: the audit report at exit, on SIGTERM, and across fork.

* The report path (``HPU_SHIM_REPORT``) is absolute from ``install()`` on (``config`` resolves it),
  so a later ``chdir`` cannot move it.
* At exit the audit is appended, bounded: a FIFO with no reader or a lock held by another process
  costs at most ``REPORT_TIMEOUT`` seconds and one WARNING, never a hang.
* SIGTERM under the *default* handler would skip atexit and lose the report: where the default is
  in place (checked at install and again when the backend resolves, after the application set its
  own handlers), a handler flushes the report and then re-delivers SIGTERM under the default
  disposition, so the exit status stays -15/143. Handlers installed by others (vLLM's) are never
  replaced; ``uninstall()`` puts the default back if the shim's handler is still there.
* A forked child starts with its parent's records marked written (``Audit`` registers that with
  ``os.register_at_fork``), so the parent's counts are never appended twice.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import Any, Callable

log = logging.getLogger("hpu_shim")

__all__ = ["ExitReport", "REPORT_TIMEOUT"]

#: seconds the exit report may wait for a FIFO reader or another process's lock
REPORT_TIMEOUT = 2.0


class ExitReport:
    """Writes the audit to the report file at exit and on SIGTERM (see the module docstring)."""

    def __init__(self, audit: Any, backend_name: Callable[[], str | None]):
        self._audit = audit
        self._backend_name = backend_name
        self.path: str | None = None
        self._atexit = False
        self._handler_installed = False

    def arm(self, path: str | None) -> None:
        self.path = path
        if path and not self._atexit:
            atexit.register(self.flush)
            self._atexit = True
        if path:
            self.recheck_signal()

    def recheck_signal(self) -> None:
        """Install the SIGTERM flush where the default handler is in place (main thread only)."""
        if not self.path or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, self._on_sigterm)
                self._handler_installed = True
        except (ValueError, OSError):  # embedded interpreters without signal support
            pass

    def disarm(self) -> None:
        """``uninstall()``: the default SIGTERM handler back if ours is still in place (the path stays:
        calls made while installed are still appended at exit)."""
        if self._handler_installed and threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except (ValueError, OSError):
                pass
            self._handler_installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        try:
            self.flush()
        finally:  # then exactly what the default handler does: terminate by SIGTERM (-15 / 143)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def flush(self, path: str | None = None) -> int:
        """Append the calls since the last flush; returns the call sites written (0 on failure, warned)."""
        path = path or self.path or os.environ.get("HPU_SHIM_REPORT")
        if not path:
            return 0
        path = os.path.abspath(path)
        try:
            return self._audit.write_jsonl(path, timeout=REPORT_TIMEOUT, backend=self._backend_name())
        except TimeoutError as exc:
            log.warning("hpu_shim: the audit was not appended to HPU_SHIM_REPORT=%s: %s. Point HPU_SHIM_REPORT at "
                        "a regular file that no other process keeps locked.", path, exc)
        except OSError as exc:
            log.warning("hpu_shim: could not append the audit to HPU_SHIM_REPORT=%s: %s", path, exc)
        return 0
