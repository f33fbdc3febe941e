"""hpu_shim.core.devices: translation is exact (whole device specs only) and every CUDA ordinal
names the process's own device (one HPU per process)."""

import pytest
import torch

from hpu_shim.core.devices import DeviceTarget, is_cuda_spec, is_torch_callee, tensor_cuda_args, translate

HPU = DeviceTarget("hpu", current=lambda: 0)
CPU = DeviceTarget("cpu")


def _dev(*args):
    return lambda: torch.device(*args)


# torch.device values are built inside the test: once the emulated HPU is installed in this process
# (another test may have), "hpu" parses to the renamed PrivateUse1 type, which does not compare equal to
# a torch.device("hpu") built before -- an emulator artefact, so both sides must come from the same moment.
@pytest.mark.parametrize("value,expected", [
    ("cuda", "hpu"), ("cuda:0", "hpu:0"), ("cuda:1", "hpu:0"), ("cuda:7", "hpu:0"),
    (_dev("cuda"), _dev("hpu")), (_dev("cuda", 0), _dev("hpu:0")), (_dev("cuda:3"), _dev("hpu:0")),
])
def test_cuda_specs_translate_to_the_process_device(value, expected):
    value, expected = (v() if callable(v) else v for v in (value, expected))
    out = translate(value, HPU)
    assert out == expected and type(out) is type(expected)


def test_current_device_is_asked_once_and_only_for_an_ordinal():
    asked = []
    target = DeviceTarget("hpu", current=lambda: asked.append(1) or 2)
    assert translate("cuda", target) == "hpu" and asked == []  # building/using the bare type touches nothing
    assert translate("cuda:1", target) == "hpu:2" and translate("cuda:0", target) == "hpu:2"
    assert asked == [1]


@pytest.mark.parametrize("value", ["cuda_version", "non_cuda_key", "cudax", "cuda:", "cuda:x", "CUDA", " cuda",
                                   "cpu", "hpu:0", "cuda:0:1", torch.device("cpu"), 1.5, None, True, b"cuda"])
def test_non_specs_untouched(value):
    assert translate(value, HPU, allow_int=True) is value


def test_ints_only_where_allowed():
    assert translate(1, HPU) == 1
    assert translate(1, HPU, allow_int=True) == "hpu:0"
    assert translate(-1, HPU, allow_int=True) == -1
    assert translate(True, HPU, allow_int=True) is True  # bool is not a device ordinal


def test_cpu_drops_index():
    assert translate("cuda:1", CPU) == "cpu"
    assert translate(torch.device("cuda", 1), CPU) == torch.device("cpu")


def test_is_cuda_spec():
    assert is_cuda_spec("cuda:2") and is_cuda_spec(torch.device("cuda"))
    assert not is_cuda_spec("cuda_version") and not is_cuda_spec(0) and is_cuda_spec(0, allow_int=True)


def test_tensor_cuda_args():
    assert tensor_cuda_args((), {}, HPU) == ("hpu", {})
    assert tensor_cuda_args((1, True), {}, HPU) == ("hpu:0", {"non_blocking": True})
    assert tensor_cuda_args((), {"device": "cuda:1", "memory_format": 1}, HPU) == ("hpu:0", {"memory_format": 1})


def test_torch_callees_read_int_ordinals():
    t, m = torch.ones(1), torch.nn.Linear(1, 1)
    for f in (torch.empty, torch.zeros, torch.device, t.new_zeros, t.to, m.to, torch.Tensor.new_zeros):
        assert is_torch_callee(f), f
    for f in (print, dict, lambda device=0: device, is_torch_callee):
        assert not is_torch_callee(f), f
