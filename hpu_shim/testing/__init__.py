"""Emulated Intel Gaudi (HPU) device for CPU-only tests and benchmarks.

``install_emulator()`` makes ``torch.device("hpu")`` real in this process: tensors on
``hpu:0`` backed by host memory, a ``torch.hpu`` module shaped like Habana's API, and a
``habana_frameworks`` stub with ``mark_step``.  Every behaviour follows the Gaudi PyTorch bridge
as documented, with its source, in docs/gaudi-semantics.md; where the bridge differs between
releases a profile picks one (``PROFILES``, default ``latest``).  Where the emulator cannot do
what Gaudi does, it raises instead of pretending.

Importing this package is cheap (no torch import); torch is loaded by install_emulator().
"""

from ._counters import (
    ALL_FIELDS,
    COUNTER_DOCS,
    CountDelta,
    clear_graph_cache,
    count,
    counters,
    pending_ops,
    reset_counters,
)
from ._install import (
    ENV_FLAG,
    Emulator,
    EmulatorInstallError,
    install_emulator,
    is_installed,
)
from ._lazy import EAGER_WARNING, is_lazy
from ._profile import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, EmulatorConfigError

__all__ = [
    "ALL_FIELDS",
    "COUNTER_DOCS",
    "DEFAULT_PROFILE",
    "EAGER_WARNING",
    "ENV_FLAG",
    "PROFILES",
    "PROFILE_ENV",
    "CountDelta",
    "Emulator",
    "EmulatorConfigError",
    "EmulatorInstallError",
    "clear_graph_cache",
    "count",
    "counters",
    "host_of",
    "install_emulator",
    "is_installed",
    "is_lazy",
    "pending_ops",
    "reset_counters",
    "set_memory_limit",
]


def host_of(tensor):
    """The host tensor backing an hpu tensor (test helper; reads without counting a transfer)."""
    from ._device import host_of as _host_of
    return _host_of(tensor)


def set_memory_limit(nbytes: int) -> None:
    """Change the emulated device memory Limit (memory_stats()['Limit']) at runtime."""
    from ._memory import TRACKER
    TRACKER.limit = int(nbytes)
