"""Dtypes the HPU stores differently from what torch reports (hpu_shim.testing._dtypes).

Facts (docs/gaudi-semantics.md "int64", "Dtypes"): without PT_ENABLE_INT64_SUPPORT (lazy default,
common/lazy/utils.cpp) the device holds Long as int32 (backend/helpers/get_n_bytes.h): lazy H2D casts
on the host after a range check that raises (habana_kernels/lazy_kernels.cpp, preProcessIfLongorDouble,
validateDownCast), eager H2D casts without a check (habana_eager/ops/copy_from.cpp), D2H widens on the
host; eager on Gaudi2+ is native int64 unless the flag says otherwise (common/eager/utils.cpp).
"""

import pytest
import torch

import hpu_shim.testing as hpu_testing

BIG = 2 ** 40

INT64_CHILD = """
import pytest
import torch
import hpu_shim.testing as T
from hpu_shim.testing import results
emu = T.install_emulator()
out = {"lazy": emu.lazy}
src = torch.arange(1000, dtype=torch.int64)
with T.count() as c:
    dev = src.to("hpu")
    back = dev.cpu()
out["roundtrip"] = [bool(torch.equal(back, src)), dev.dtype == torch.int64, c.as_dict()]
try:
    dev.copy_(torch.full((1000,), 2 ** 40, dtype=torch.int64))
    out["overflow"] = "copied"
except RuntimeError as e:
    out["overflow"] = str(e)
out["untouched"] = bool(torch.equal(dev.cpu(), src))
edge = torch.tensor([2 ** 31 - 1], dtype=torch.int64).to("hpu")
out["device_wrap"] = (edge + 1).cpu().tolist()
slots = torch.tensor([3, 1], dtype=torch.int64).to("hpu")
out["index"] = torch.arange(10.0).to("hpu").index_select(0, slots).cpu().tolist()
results.emit(out)
"""


def test_lazy_holds_int64_as_int32(run_py):
    out = run_py(INT64_CHILD, env={"PT_HPU_LAZY_MODE": "1"}).results[0]
    assert out["lazy"]
    equal, dtype_kept, c = out["roundtrip"]
    assert equal and dtype_kept
    assert (c["int64_host_casts"], c["int64_host_cast_bytes"]) == (2, 2 * 8000)  # pack in, widen out
    assert (c["h2d_bytes"], c["d2h_bytes"]) == (8000, 8000)  # torch's view of the bytes
    assert c["bounce_buffer_bytes"] == 2 * 4000  # the int32 bytes are staged (the cast is a new host tensor)
    assert "Error when trying to cast Long to Int, Input values range [1099511627776, 1099511627776]" in out["overflow"]
    assert "PT_ENABLE_INT64_SUPPORT=1" in out["overflow"]
    assert out["untouched"]  # the failed copy wrote nothing
    assert out["device_wrap"] == [-(2 ** 31)]  # int32 arithmetic on the device
    assert out["index"] == [3.0, 1.0]


def test_lazy_with_int64_support_is_native(run_py):
    out = run_py(INT64_CHILD, env={"PT_HPU_LAZY_MODE": "1", "PT_ENABLE_INT64_SUPPORT": "1"}).results[0]
    assert out["roundtrip"][2]["int64_host_casts"] == 0 and out["overflow"] == "copied"
    assert out["device_wrap"] == [2 ** 31]


def test_eager_without_int64_support_truncates_silently(run_py):
    out = run_py(INT64_CHILD, env={"PT_ENABLE_INT64_SUPPORT": "0"}).results[0]
    assert not out["lazy"]
    c = out["roundtrip"][2]
    assert c["int64_host_casts"] == 2 and c["blocking_d2h_copies"] == 1
    assert out["overflow"] == "copied" and not out["untouched"]  # eager casts without a range check
    assert out["device_wrap"] == [-(2 ** 31)]


def test_eager_default_is_native_int64(emulated_hpu):
    assert not emulated_hpu.lazy
    src = torch.tensor([BIG, -BIG, 2 ** 31], dtype=torch.int64)
    with hpu_testing.count() as c:
        dev = src.to("hpu")
        assert torch.equal((dev + 1).cpu(), src + 1)
    assert c.int64_host_casts == 0 and c.int64_host_cast_bytes == 0


FLOAT64_CHILD = """
import pytest
import torch
import hpu_shim.testing as T
from hpu_shim.testing import results
emu = T.install_emulator()
out = {"lazy": emu.lazy}
src = torch.tensor([0.1, 1 / 3, 1e-50, float("inf")], dtype=torch.float64)
with T.count() as c:
    dev = src.to("hpu")
    back = dev.cpu()
out["roundtrip"] = [back.tolist(), str(dev.dtype), str(back.dtype), c.as_dict()]
with T.count() as c:
    y = (dev * 3).sum()
out["op"] = [str(y.dtype), y.item(), c.float64_downcasts]
try:
    dev[:1].copy_(torch.tensor([1e300], dtype=torch.float64))
    out["overflow"] = dev[:1].cpu().tolist()
except RuntimeError as e:
    out["overflow"] = str(e)
results.emit(out)
"""


def test_lazy_float64_is_float32_and_range_checked(run_py):
    out = run_py(FLOAT64_CHILD, env={"PT_HPU_LAZY_MODE": "1"}).results[0]
    values, dev_dtype, back_dtype, c = out["roundtrip"]
    assert dev_dtype == back_dtype == "torch.float64"  # torch keeps reporting float64
    f32 = torch.tensor([0.1, 1 / 3, 1e-50, float("inf")], dtype=torch.float64).float().double().tolist()
    assert values == f32 and values[0] != 0.1 and values[2] == 0.0  # float32 precision and range
    assert c["float64_downcasts"] == 1 and c["bounce_buffer_bytes"] == 2 * 16  # float32 bytes each way
    dtype, _value, downcasts = out["op"]
    assert dtype == "torch.float64" and downcasts >= 2  # every op writing float64 rounds to float32
    assert "Error when trying to cast Double to Float" in out["overflow"]


def test_eager_float64_overflow_becomes_inf_silently(emulated_hpu):
    with hpu_testing.count() as c:
        dev = torch.tensor([1e300, 0.1], dtype=torch.float64).to("hpu")
        back = dev.cpu()
    assert back.dtype == torch.float64 and back[0] == float("inf")
    assert back[1].item() == torch.tensor(0.1).item()  # float32 0.1, widened
    assert c.float64_downcasts == 1 and c.blocking_d2h_copies == 1


def test_float64_free_code_counts_no_downcast(emulated_hpu):
    with hpu_testing.count() as c:
        x = torch.arange(8, dtype=torch.float32).to("hpu")
        (x * 2).sum().item()
        torch.zeros(4, dtype=torch.bfloat16, device="hpu").cpu()
    assert c.float64_downcasts == 0


def test_float64_factories_and_ops_are_counted(emulated_hpu):
    with hpu_testing.count() as c:
        z = torch.full((3,), 0.1, dtype=torch.float64, device="hpu")
    assert c.float64_downcasts >= 1 and z.cpu()[0].item() == torch.tensor(0.1).item()
    with hpu_testing.count() as c:
        torch.ones(3, device="hpu").double()
    assert c.float64_downcasts >= 1


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(2, dtype=torch.complex64, device="hpu"),
    lambda: torch.ones(2, dtype=torch.complex128).to("hpu"),
    lambda: torch.empty(2, dtype=torch.cfloat, device="hpu"),
], ids=["factory", "h2d", "empty"])
def test_complex_cannot_live_on_the_hpu(emulated_hpu, make):
    with pytest.raises(RuntimeError, match="Complex datatype is not supported on HPU device"):
        make()


def test_dtypes_outside_the_bridge_list_are_refused(emulated_hpu):
    with pytest.raises(RuntimeError, match="torch.uint16 is not supported on HPU device"):
        torch.zeros(2, dtype=torch.uint16, device="hpu")
    for dtype in (torch.uint8, torch.bool, torch.bfloat16, torch.float16, torch.float8_e4m3fn):
        assert torch.empty(2, dtype=dtype, device="hpu").dtype == dtype
