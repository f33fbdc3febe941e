"""hpu_shim.core.devices: translation is exact: whole device specs only."""

import pytest
import torch

from hpu_shim.core.devices import DeviceTarget, is_cuda_spec, translate

HPU = DeviceTarget("hpu", keeps_index=True)
CPU = DeviceTarget("cpu", keeps_index=False)


@pytest.mark.parametrize("value,expected", [
    ("cuda", "hpu"), ("cuda:0", "hpu:0"), ("cuda:1", "hpu:1"),
    (torch.device("cuda"), torch.device("hpu")), (torch.device("cuda", 0), torch.device("hpu:0")),
    (torch.device("cuda:3"), torch.device("hpu:3")),
])
def test_cuda_specs_translate(value, expected):
    out = translate(value, HPU)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value", ["cuda_version", "non_cuda_key", "cudax", "cuda:", "cuda:x", "CUDA", " cuda",
                                   "cpu", "hpu:0", "cuda:0:1", torch.device("cpu"), 1.5, None, True, b"cuda"])
def test_non_specs_untouched(value):
    assert translate(value, HPU, allow_int=True) is value


def test_ints_only_where_allowed():
    assert translate(1, HPU) == 1
    assert translate(1, HPU, allow_int=True) == "hpu:1"
    assert translate(-1, HPU, allow_int=True) == -1
    assert translate(True, HPU, allow_int=True) is True  # bool is not a device ordinal


def test_cpu_drops_index():
    assert translate("cuda:1", CPU) == "cpu"
    assert translate(torch.device("cuda", 1), CPU) == torch.device("cpu")


def test_is_cuda_spec():
    assert is_cuda_spec("cuda:2") and is_cuda_spec(torch.device("cuda"))
    assert not is_cuda_spec("cuda_version") and not is_cuda_spec(0) and is_cuda_spec(0, allow_int=True)
