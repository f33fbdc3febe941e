"""The emulated hpu device (hpu_shim.testing._device): device rules, copies, dtypes and fallbacks.

Each test names the bridge behaviour it checks; the facts and their sources are in
docs/gaudi-semantics.md (section named in each test's docstring).  Basic tensor mechanics (views,
aliasing, factories) are in test_tensors.py.
"""

import pytest
import torch


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(2, device="hpu:1"),
    lambda: torch.empty(2, device=torch.device("hpu", 2)),
    lambda: torch.ones(2).to("hpu:1"),
    lambda: torch.ones(2, device="hpu").to("hpu:3"),
    lambda: torch.empty_strided((2,), (1,), device="hpu:1"),
], ids=["zeros", "empty", "h2d", "d2d", "empty_strided"])
def test_device_index_above_zero_fails_the_guard(emulated_hpu, make):
    """Devices: HPUGuardImpl.h exchangeDevice refuses any index but 0."""
    with pytest.raises(RuntimeError, match=r"habana active device: \d != 0.*one device per process"):
        make()


def test_hpu_and_hpu0_are_one_device(emulated_hpu):
    """Devices: the guard always reports device 0."""
    a, b = torch.ones(2, device="hpu"), torch.ones(2, device="hpu:0")
    assert a.device == b.device == torch.device("hpu", 0)
    assert torch.equal((a + b).cpu(), torch.full((2,), 2.0))
