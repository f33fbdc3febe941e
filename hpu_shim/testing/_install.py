"""``install_emulator()``: wire the emulated HPU into this process, once.

Order matters: the bridge's environment flags are validated first (a bad value changes nothing),
then PrivateUse1 is renamed to ``hpu`` and ``torch.hpu`` registered before any kernel or
``torch.device('hpu')`` is created (the rename is once per process).  We refuse, with a clear
error, to shadow a real Gaudi stack or another ``torch.hpu``.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from types import ModuleType

from . import _counters, _habana, _lazy, _profile
from ._memory import TRACKER, limit_from_env
from ._profile import EmulatorConfigError

ENV_FLAG = "HPU_SHIM_FAKE_HPU"


class EmulatorInstallError(EmulatorConfigError):
    """The emulator cannot be installed in this process (see message)."""


@dataclass(frozen=True)
class Emulator:
    """Handle returned by install_emulator(); same object on every call."""

    torch_hpu: ModuleType
    lazy: bool
    memory_limit: int
    profile: str = _profile.DEFAULT_PROFILE

    def counters(self) -> dict[str, int]:
        return _counters.counters()

    def reset_counters(self) -> None:
        _counters.reset_counters()

    def count(self):
        return _counters.count()


_lock = threading.Lock()
_handle: Emulator | None = None


def is_installed() -> bool:
    return _handle is not None


def _refuse_foreign_hpu(torch) -> None:
    existing = getattr(torch, "hpu", None) or sys.modules.get("torch.hpu")
    if existing is not None:
        raise EmulatorInstallError(
            f"torch.hpu already exists ({existing!r}), registered by something other than "
            "hpu_shim.testing; refusing to replace it"
        )
    backend = torch._C._get_privateuse1_backend_name()
    if backend != "privateuseone":
        raise EmulatorInstallError(
            f"the PrivateUse1 backend is already renamed to {backend!r}; the HPU emulator needs it "
            "and can only be installed in a fresh process"
        )


def install_emulator(*, memory_limit: int | None = None, profile: str | None = None) -> Emulator:
    """Install the emulated HPU (idempotent).

    ``memory_limit`` defaults to env / 96 GiB; ``profile`` (a key of ``_profile.PROFILES``) to
    ``HPU_SHIM_FAKE_HPU_PROFILE`` / ``latest``.  The bridge's environment flags are read here, once.
    """
    global _handle
    with _lock:
        if _handle is not None:
            if profile is not None and profile != _handle.profile:
                raise EmulatorInstallError(
                    f"the emulated HPU is already installed with profile {_handle.profile!r}; a process "
                    f"cannot switch to {profile!r} (run it in a fresh interpreter)")
            return _handle
        _habana.refuse_if_real()
        settings = _profile.resolve(os.environ, profile)  # bad flags fail before anything changes
        import torch
        import torch.utils.backend_registration as registration

        _refuse_foreign_hpu(torch)
        from . import _device, _pinned, _torch_hpu

        TRACKER.limit = int(memory_limit) if memory_limit is not None else limit_from_env()
        _profile.configure(os.environ, settings.profile.name)
        lazy = _lazy.configure_from_env(settings.profile.name)  # the mode is fixed once, at install
        torch_hpu = _torch_hpu.build_module()
        registration._setup_privateuseone_for_python_backend(rename="hpu", backend_module=torch_hpu)
        _device.register()
        _pinned.register(settings.profile.pinned_allocator, settings.profile.name)
        _habana.install(torch_hpu)
        os.environ[ENV_FLAG] = "1"  # spawned children re-create the emulator (sitecustomize)
        if profile is not None:
            os.environ[_profile.PROFILE_ENV] = profile  # children emulate the same release
        _handle = Emulator(torch_hpu=torch_hpu, lazy=lazy, memory_limit=TRACKER.limit,
                           profile=settings.profile.name)
        return _handle
