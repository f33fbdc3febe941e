"""Emulated Intel Gaudi (HPU) device for CPU-only tests and benchmarks.

``install_emulator()`` makes ``torch.device("hpu")`` real in this process: tensors on
``hpu:0`` backed by host memory, a ``torch.hpu`` module shaped like Habana's 1.17 API,
and a ``habana_frameworks`` stub with ``mark_step``.  Semantics follow
/work/shared/research/hpu_ecosystem.md A1-A5; where the emulator cannot do what Gaudi
does, it raises instead of pretending.

Importing this package is cheap (no torch import); torch is loaded by install_emulator().
"""

from ._counters import (  # noqa: F401
    ALL_FIELDS,
    COUNTER_DOCS,
    CountDelta,
    clear_graph_cache,
    count,
    counters,
    pending_ops,
    reset_counters,
)
from ._install import ENV_FLAG, Emulator, EmulatorInstallError, install_emulator, is_installed  # noqa: F401
from ._lazy import EAGER_WARNING, is_lazy  # noqa: F401

__all__ = [
    "install_emulator", "is_installed", "Emulator", "EmulatorInstallError", "ENV_FLAG",
    "counters", "reset_counters", "count", "CountDelta", "clear_graph_cache", "pending_ops",
    "is_lazy", "EAGER_WARNING", "host_of", "set_memory_limit", "ALL_FIELDS", "COUNTER_DOCS",
]


def host_of(tensor):
    """The host tensor backing an hpu tensor (test helper; reads without counting a transfer)."""
    from ._device import host_of as _host_of
    return _host_of(tensor)


def set_memory_limit(nbytes: int) -> None:
    """Change the emulated device memory Limit (memory_stats()['Limit']) at runtime."""
    from ._memory import TRACKER
    TRACKER.limit = int(nbytes)
