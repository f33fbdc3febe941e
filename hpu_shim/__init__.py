"""hpu-shim: run unmodified LMCache on Intel Gaudi.

An import hook redirects ``torch.cuda.*``, ``Tensor.cuda`` and CUDA device arguments to
``torch.hpu`` (or the CPU) inside LMCache's modules only; every other library keeps the real
``torch.cuda``. ``import hpu_shim`` installs it (idempotently) unless ``HPU_SHIM=0``.
"""

from __future__ import annotations

import os as _os

from .runtime.runtime import CudaFallthroughWarning, LateInstallWarning, flush_report, install, report, status, uninstall
from .runtime.config import ShimConfigError
from .backends import BackendUnavailable
from .errors import UnsupportedCudaAPI

__version__ = "0.1.0"
__all__ = [
    "install", "uninstall", "status", "report", "flush_report",
    "UnsupportedCudaAPI", "ShimConfigError", "BackendUnavailable",
    "LateInstallWarning", "CudaFallthroughWarning", "__version__",
]


def _autoinstall() -> None:
    """``import hpu_shim`` means "turn it on", unless HPU_SHIM=0 (a bad value raises, naming it)."""
    from .runtime.config import load

    if load().enabled is not False:
        from .runtime.runtime import RUNTIME

        RUNTIME.install(_source="import")


def _run_as_tool() -> bool:
    """``python -m hpu_shim[.x]`` is a tool (doctor, report, run, bench): it must not shim itself.

    While ``-m`` locates its module, ``sys.argv[0]`` is ``"-m"``; ``sys.orig_argv`` names the module.
    """
    import sys

    if sys.argv[:1] != ["-m"]:
        return False
    argv = list(getattr(sys, "orig_argv", []))
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    return module == "hpu_shim" or module.startswith("hpu_shim.")


if _os.environ.get("HPU_SHIM", "").strip() != "0" and not _run_as_tool():
    _autoinstall()
