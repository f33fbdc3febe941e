"""Fresh interpreters for measurements: each figure gets a clean process (no shim left installed,
no emulator, its own memory), configured only by the environment built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO", "BenchError", "env", "release", "run_child", "results"]

REPO = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """A measurement process failed; the message carries the tail of its output."""


def env(pythonpath: list[str | Path] = (), cache: Path | None = None, **extra: str) -> dict:
    """The parent's environment minus any shim/HPU settings, plus ``extra``.

    ``cache``: a PYTHONPYCACHEPREFIX with bytecode writing on, so repeated runs import from warm
    caches whatever the user's PYTHONDONTWRITEBYTECODE says (the shim's rewritten pycs go there too).
    """
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("HPU_SHIM", "PT_HPU")) and k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")}
    out.update(PYTHONPATH=os.pathsep.join([*(str(p) for p in pythonpath), str(REPO)]), HPU_SHIM="0",
               LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0")
    if cache is not None:
        out["PYTHONPYCACHEPREFIX"] = str(cache)
        out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.update(extra)
    return out


def release(envs: Path, version: str) -> Path | None:
    """The directory holding LMCache ``version`` (``.ci/lmcache-envs.sh`` layout), or None."""
    path = envs / f"lmcache-{version}"
    return path if (path / "lmcache" / "__init__.py").is_file() else None


def results(argv: list[str], environ: dict, timeout: float) -> list[dict]:
    """Run ``argv``; return what it emitted through ``hpu_shim.testing.results`` (a file, never its
    stdout, which LMCache and vLLM log onto). Raises BenchError with the output's tail if nothing came."""
    from ..testing.results import run_child as run

    try:
        child = run(argv, env=environ, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv[2:4])} ... timed out after {timeout:.0f} s") from exc
    if not child.results:
        tail = "\n".join((child.stderr or child.stdout).strip().splitlines()[-15:])
        killed = f" (killed by signal {-child.returncode}: out of memory?)" if child.returncode < 0 else ""
        raise BenchError(f"{' '.join(argv[2:4])} exited {child.returncode}{killed} without a result:\n{tail}")
    return child.results


def run_child(module: str, kwargs: dict[str, Any], environ: dict, timeout: float = 900) -> dict:
    """``hpu_shim.bench.<module>.measure(**kwargs)`` (``module:function`` for another) in a fresh interpreter;
    a measurement that raised is a BenchError carrying its message."""
    argv = [sys.executable, "-m", "hpu_shim.bench._child", module, json.dumps(kwargs)]
    result = results(argv, environ, timeout)[-1]
    if "error" in result:
        raise BenchError(f"{module}: {result['error']}")
    return result
