"""The redirect audit: every redirected call site, recorded once with a count.

Lines follow the GPU Migration Toolkit's habit (one entry per call site and category) so that
people who know its logs can read ours:

    [modified] torch.cuda.synchronize() -> habana_frameworks.torch.core.mark_step(); torch.hpu.synchronize() @ lmcache/v1/foo.py:123 (x4)

``HPU_SHIM_REPORT=PATH`` makes every process append its records to PATH at exit as JSON lines
tagged with its pid; ``python -m hpu_shim report PATH`` merges them across worker processes.
Appending is bounded (a FIFO without a reader or a lock held elsewhere raises ``TimeoutError``
after ``timeout`` seconds) and a forked child never appends its parent's calls again.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
import threading
import time
import weakref
from typing import Any, Iterable

__all__ = ["Audit", "Record", "site_of", "format_args", "merge", "render_table", "read_jsonl", "read_report",
           "REQUIRED"]

#: the keys every report line written by ``Audit.write_jsonl`` carries
REQUIRED = ("category", "api", "args", "target", "site", "count", "pid")


@dataclasses.dataclass
class Record:
    category: str
    api: str
    args: str
    target: str
    site: str
    count: int = 1

    @property
    def call(self) -> str:
        """``torch.cuda.X(args)`` for calls, ``device='cuda'`` for keywords, ``import lmcache.c_ops`` for imports."""
        if self.api.endswith("=") or self.api.startswith("import "):
            return f"{self.api}{self.args}"
        return f"{self.api}({self.args})"

    def line(self) -> str:
        return f"[{self.category}] {self.call} -> {self.target} @ {self.site} (x{self.count})"


def site_of(frame: Any) -> str:
    """``lmcache/v1/foo.py:123``: the module path as a package-relative file, then the line."""
    name = frame.f_globals.get("__name__") or "?"
    filename = frame.f_code.co_filename
    if isinstance(name, str) and name != "__main__" and filename.endswith(".py"):
        rel = name.replace(".", "/") + ("/__init__.py" if filename.endswith("__init__.py") else ".py")
    else:
        rel = filename
    return f"{rel}:{frame.f_lineno}"


def _short(value: Any, limit: int = 48) -> str:
    if isinstance(value, str) and value == "True":
        return value
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    if type(value).__name__ == "Tensor" or "tensor(" in text:
        shape = tuple(getattr(value, "shape", ()))
        text = f"<Tensor {shape} {getattr(value, 'dtype', '')} on {getattr(value, 'device', '?')}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_args(args: Iterable[Any] = (), kwargs: dict | None = None) -> str:
    parts = [_short(a) for a in args]
    parts += [f"{k}={_short(v)}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)


class Audit:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: ``(id(code), f_lasti, api) -> Record``; hot paths read it (and bump ``count``) without a call
        self.sites: dict[tuple, Record] = {}
        self._written: dict[tuple, int] = {}  # counts already appended to a report file
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (a := ref()) is not None and a._after_fork())

    def _after_fork(self) -> None:
        """In a forked child the parent's calls are the parent's to report: mark them written."""
        self._lock = threading.Lock()
        self._written = {key: rec.count for key, rec in self.sites.items()}

    def hit(self, frame: Any, category: str, api: str, target: Any, args: tuple = (), kwargs: dict | None = None) -> None:
        """Count a call at ``frame``'s site; the record is built (args formatted, ``target`` called if it is
        a callable) only the first time. Repeat hits take no lock: on the hot path a redirect costs a
        dict lookup and an increment (under heavy thread contention a count can be a few short).

        The site key is the code object and the instruction offset: ``f_lineno`` scans the line table
        on every access (about 0.25 us), so the line is computed once, when the record is created. The
        record keeps the code object alive, so its id cannot be reused by another one."""
        code = frame.f_code
        key = (id(code), frame.f_lasti, api)
        rec = self.sites.get(key)
        if rec is not None:
            rec.count += 1
            return
        with self._lock:
            rec = self.sites.get(key)
            if rec is not None:
                rec.count += 1
                return
            rec = Record(category, api, format_args(args, kwargs), target() if callable(target) else target,
                         site_of(frame))
            rec._code = code  # type: ignore[attr-defined]  (pins id(code), see above)
            self.sites[key] = rec

    def records(self) -> list[Record]:
        """One record per call site: sites reached by several instructions on one line are merged."""
        merged: dict[tuple, Record] = {}
        with self._lock:
            for r in self.sites.values():
                key = (r.site, r.api, r.category)
                if key in merged:
                    merged[key].count += r.count
                else:
                    merged[key] = dataclasses.replace(r)
        return list(merged.values())

    def clear(self) -> None:
        with self._lock:
            self.sites.clear()
            self._written.clear()

    def write_jsonl(self, path: str, *, timeout: float | None = None, **tags: Any) -> int:
        """Append one JSON line per record with calls not yet written, tagged with pid (and ``tags``).

        Counts are deltas since the previous successful write, so flushing early and again at exit
        never double-counts, and a failed write loses nothing for the next one. One ``write`` per
        flush, under an exclusive lock, so worker processes appending to the same file never
        interleave lines. With ``timeout``, waiting for a FIFO reader or for the lock is bounded:
        ``TimeoutError`` after that many seconds.
        """
        with self._lock:
            pending = {}
            for key, rec in self.sites.items():
                delta = rec.count - self._written.get(key, 0)
                if delta > 0:
                    pending[key] = (dataclasses.replace(rec, count=delta), rec.count)
        if not pending:
            return 0
        base = {"pid": os.getpid(), "argv0": os.path.basename(sys.argv[0]) if sys.argv else "", **tags}
        blob = "".join(json.dumps({**base, **dataclasses.asdict(r)}) + "\n" for r, _ in pending.values()).encode()
        _append(path, blob, timeout)
        with self._lock:
            for key, (_, count) in pending.items():
                self._written[key] = max(self._written.get(key, 0), count)
        return len(pending)


def _append(path: str, blob: bytes, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout

    def wait(what: str) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} for {timeout:g} s")
        time.sleep(0.01)

    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_NONBLOCK if timeout is not None else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o644)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads
                raise
            wait("no process opened the FIFO for reading")
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory lock
            fcntl = None
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if timeout is not None else 0))
                break
            except BlockingIOError:
                wait("another process holds the file's lock")
            except OSError:  # no locking on this file system
                break
        view = memoryview(blob)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                wait("the FIFO's reader did not drain it")
    finally:
        os.close(fd)


def read_jsonl(path: str) -> list[dict]:
    """The hpu_shim records in ``path``; other lines are skipped (``read_report`` names them)."""
    return read_report(path)[0]


def read_report(path: str) -> tuple[list[dict], list[str]]:
    """The hpu_shim records in ``path`` and, for every other line, ``"path:N: why"`` (skipped, counted).

    Raises OSError (``IsADirectoryError``, ``FileNotFoundError``...) when the file cannot be read.
    """
    rows, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"{path}:{n}: not JSON ({exc.msg})")
                continue
            missing = [k for k in REQUIRED if k not in row] if isinstance(row, dict) else list(REQUIRED)
            if missing or not isinstance(row.get("count"), int):
                bad.append(f"{path}:{n}: not an hpu_shim record (missing {', '.join(missing) or 'an integer count'})")
                continue
            rows.append(row)
    return rows, bad


def merge(rows: Iterable[dict]) -> list[dict]:
    """Merge records from many processes: one row per call site, counts summed, pids collected."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = (row["category"], row["api"], row["target"], row["site"])
        m = merged.setdefault(key, {**{k: row[k] for k in ("category", "api", "args", "target", "site")},
                                    "count": 0, "pids": set()})
        m["count"] += int(row.get("count", 1))
        m["pids"].add(row.get("pid"))
    def order(m: dict) -> tuple:
        path, _, line = m["site"].rpartition(":")
        return (path, int(line) if line.isdigit() else 0, m["api"])

    return sorted(merged.values(), key=order)


def render_table(rows: list[dict]) -> str:
    if not rows:
        return "no redirected call sites recorded"
    header = ("category", "call", "redirected to", "site", "count", "procs")
    body = [
        (r["category"], Record(r["category"], r["api"], r["args"], r["target"], r["site"]).call, r["target"], r["site"], str(r["count"]), str(len(r["pids"])))
        for r in rows
    ]
    widths = [min(72, max(len(h), *(len(b[i]) for b in body))) for i, h in enumerate(header)]

    def fmt(cols):
        return "  ".join(c[:w].ljust(w) for c, w in zip(cols, widths)).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    total = sum(r["count"] for r in rows)
    pids = set().union(*(r["pids"] for r in rows))
    lines.append(f"{len(rows)} call sites, {total} calls, {len(pids)} processes")
    return "\n".join(lines)
