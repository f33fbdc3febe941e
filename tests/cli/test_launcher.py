"""hpu_shim.cli.launcher: `python -m hpu_shim run -- CMD` sets the shim's environment and execs CMD."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from _helpers import REPO, clean_env

SITE = str(REPO / "sitecustomize")


def launch(*command: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = clean_env(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "hpu_shim", "run", "--", *command], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_sets_environment_and_shims_the_child():
    proc = launch(sys.executable, "-c",
                  "import os, sys, hpu_shim; print(os.environ['HPU_SHIM'], os.environ['PYTHONHASHSEED'], "
                  "os.environ['PYTHONPATH'].split(os.pathsep)[0], hpu_shim.status()['installed'], "
                  "'sitecustomize' in sys.modules)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["1", "0", SITE, "True", "True"]
    assert "PYTHONHASHSEED was unset; set to 0" in err


def test_keeps_an_explicit_hash_seed():
    proc = launch(sys.executable, "-c", "import os; print(os.environ['PYTHONHASHSEED'])", env={"PYTHONHASHSEED": "7"})
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "7" and "PYTHONHASHSEED" not in err


def test_exit_code_is_the_commands():
    proc = launch(sys.executable, "-c", "import sys; sys.exit(7)")
    proc.communicate(timeout=120)
    assert proc.returncode == 7


def test_exec_means_signals_reach_the_command_directly():
    proc = launch(sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)")
    pid = int(proc.stdout.readline())
    assert pid == proc.pid  # no wrapper process in between
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM


def test_errors():
    missing = launch("no-such-command-hpu-shim")
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 127 and "command not found" in err
    bad = launch(sys.executable, "-c", "pass", env={"HPU_SHIM_BACKEND": "gpu"})
    _, err = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "HPU_SHIM_BACKEND='gpu'" in err and "auto, hpu, cpu" in err
    empty = subprocess.run([sys.executable, "-m", "hpu_shim", "run"], env=clean_env(PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "usage" in empty.stderr


def test_launch_env_is_pure():
    from hpu_shim.cli.launcher import launch_env

    before = dict(os.environ)
    env = launch_env({"PATH": "/bin", "PYTHONPATH": f"/x{os.pathsep}{SITE}"})
    assert env["PYTHONPATH"] == f"{SITE}{os.pathsep}/x" and env["HPU_SHIM"] == "1"
    assert dict(os.environ) == before
