"""pytest plugin: the ``emulated_hpu`` fixture.

Load with ``pytest_plugins = ["hpu_shim.testing.pytest_plugin"]`` in the rootdir
conftest, or import the fixture into a conftest.  The emulator is installed once per
process (it cannot be uninstalled: the PrivateUse1 rename is permanent); counters are
reset for every test so assertions see only that test's events.
"""

from __future__ import annotations

import pytest

from . import _counters
from ._install import Emulator, install_emulator


@pytest.fixture
def emulated_hpu() -> Emulator:
    """The installed emulator handle (``.counters()``, ``.count()``, ``.torch_hpu``, ``.lazy``)."""
    handle = install_emulator()
    _counters.reset_counters()
    yield handle
