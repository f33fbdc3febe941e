"""Helpers shared by the test modules (imported as `_helpers`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: A CUDA-written package; installed under several names (in scope and control).
CUDA_PKG = '''
import torch
import torch.cuda
import torch.cuda as tc
from torch import cuda
from torch.cuda import Stream
AVAILABLE_AT_IMPORT = torch.cuda.is_available()

def forms():
    return {"torch.cuda": torch.cuda, "tc": tc, "cuda": cuda, "Stream": Stream}

def current_device():
    return torch.cuda.current_device()

def lazy_import_current_device():
    import torch.cuda as lazy
    from torch.cuda import current_device as cd
    return lazy.current_device(), cd()

def tensor_cuda(t):
    return t.cuda()

def tensor_to(t, dev="cuda"):
    return t.to(dev)

def factory(dev="cuda"):
    return torch.empty(2, device=dev)

def make_device(*args, **kwargs):
    return torch.device(*args, **kwargs)
'''


def clean_env(**extra: str) -> dict:
    """This environment with the shim off and no PYTHONPATH (the runtime's one sanitiser), plus ``extra``."""
    from hpu_shim.runtime.environment import clean

    return clean(pythonpath=False, **extra)


def run_py(code: str, *, path: list | tuple = (), env: dict | None = None, args: list | None = None,
           timeout: float = 300, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with the repo and `path` on PYTHONPATH.

    What the child hands back with ``hpu_shim.testing.results.emit`` is in ``proc.results`` (a file,
    never its stdout, which libraries may log onto).
    """
    from hpu_shim.testing import results

    env = clean_env(**(env or {}))
    pythonpath = [str(p) for p in path] + [str(REPO)]
    if env.get("PYTHONPATH"):
        pythonpath.insert(0, env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    with tempfile.TemporaryDirectory(prefix="hpu-shim-result-") as tmp:
        env[results.ENV] = os.path.join(tmp, "results.jsonl")
        proc = subprocess.run([sys.executable, *(args or []), "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
        proc.results = results.read(env[results.ENV])
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
