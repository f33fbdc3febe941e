"""``python -m hpu_shim run -- COMMAND...``: a launcher in the style of ``ddtrace-run``.

It sets the environment a shimmed process tree needs and then *execs* the command, so the
command becomes this process: signals reach it directly and its exit code is the launcher's,
with no wrapper process left in between to forward them or to outlive it.

* ``HPU_SHIM=1`` and the ``sitecustomize`` directory first on ``PYTHONPATH``: every Python
  interpreter in the tree (vLLM's spawned EngineCore and workers) installs the shim at startup.
* ``PYTHONHASHSEED=0`` when unset, logged: LMCache keys depend on ``hash()``, which must agree
  between the scheduler process that looks up and the worker processes that store.
"""

from __future__ import annotations

import os
import shutil
import sys

__all__ = ["run", "launch_env"]


def _note(message: str) -> None:
    print(f"hpu_shim run: {message}", file=sys.stderr, flush=True)


def launch_env(environ: dict | None = None) -> dict:
    """The environment for a shimmed command tree (validated: a bad HPU_SHIM_* value raises)."""
    from ..runtime import config as _config, environment

    env = dict(os.environ if environ is None else environ)
    if env.get("HPU_SHIM", "").strip() == "0":
        _note("HPU_SHIM=0 was set; overriding it to 1 for this command")
    env["HPU_SHIM"] = "1"
    _config.load(env)  # fail here, before exec, with the variable, value and accepted values
    env["PYTHONPATH"] = environment.with_bootstrap(env.get("PYTHONPATH"))
    if not env.get("PYTHONHASHSEED"):
        env["PYTHONHASHSEED"] = "0"
        _note("PYTHONHASHSEED was unset; set to 0 so LMCache keys agree across vLLM's processes")
    return env


def run(command: list[str]) -> int:
    """Exec ``command`` with the shim on; returns only if it cannot be started."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _note("usage: python -m hpu_shim run -- COMMAND [ARGS...]")
        return 2
    from ..runtime.config import ShimConfigError

    try:
        env = launch_env()
    except ShimConfigError as exc:
        _note(str(exc))
        return 2
    program = shutil.which(command[0], path=env.get("PATH"))
    if program is None:
        _note(f"command not found: {command[0]!r}")
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(program, command, env)
    except OSError as exc:
        _note(f"cannot execute {program!r}: {exc}")
        return 126
    return 0  # pragma: no cover - execve does not return
