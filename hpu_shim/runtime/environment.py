"""The process environment: what ``install()`` exports for children, and the one sanitiser.

``install()`` exports ``HPU_SHIM=1``, the configuration and the bootstrap directory on
``PYTHONPATH`` so ``spawn``/``forkserver`` children (vLLM's EngineCore and workers) are shimmed
too; ``uninstall()`` puts every variable back exactly. ``clean()`` is the single implementation of
"this environment without the shim" (tests, the demo, ``make matrix`` and ``doctor`` use it) and
``with_bootstrap()`` the single way to put the bootstrap first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["bootstrap_dir", "with_bootstrap", "clean", "Exported", "SHIM_PREFIX"]

SHIM_PREFIX = "HPU_SHIM"


def bootstrap_dir() -> str:
    """The directory holding the shim's sitecustomize.py (checkout layout, else installed layout)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkout = os.path.join(os.path.dirname(pkg), "sitecustomize")
    if os.path.isfile(os.path.join(checkout, "sitecustomize.py")):
        return checkout
    return os.path.join(pkg, "_sitecustomize")


def with_bootstrap(pythonpath: str | None) -> str:
    """``PYTHONPATH`` with the bootstrap directory first (once)."""
    site_dir = bootstrap_dir()
    parts = [p for p in (pythonpath or "").split(os.pathsep) if p and p != site_dir]
    return os.pathsep.join([site_dir, *parts])


def clean(environ: Mapping[str, str] | None = None, *, pythonpath: bool = True, **extra: str) -> dict:
    """A copy of ``environ`` (default ``os.environ``) with the shim turned off for a child.

    Every ``HPU_SHIM*`` variable goes; the bootstrap directory leaves ``PYTHONPATH``
    (``pythonpath=False`` drops ``PYTHONPATH`` entirely). ``extra`` is applied last.
    """
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith(SHIM_PREFIX)}
    site_dir = bootstrap_dir()
    if not pythonpath:
        env.pop("PYTHONPATH", None)
    elif "PYTHONPATH" in env:
        parts = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and p != site_dir]
        if parts:
            env["PYTHONPATH"] = os.pathsep.join(parts)
        else:
            del env["PYTHONPATH"]
    env.update(extra)
    return env


class Exported:
    """The variables one ``install()`` exported, and how to put them back."""

    def __init__(self, exports: Mapping[str, str]):
        values = {**exports, "PYTHONPATH": with_bootstrap(os.environ.get("PYTHONPATH"))}
        self.saved: dict[str, str | None] = {k: os.environ.get(k) for k in values}
        os.environ.update(values)

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def original(self) -> dict:
        """The environment as it was before this export (what ``doctor`` reports)."""
        env = dict(os.environ)
        for key, value in self.saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env
