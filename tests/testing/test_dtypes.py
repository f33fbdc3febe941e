"""Dtypes the HPU stores differently from what torch reports (hpu_shim.testing._dtypes).

Facts (docs/gaudi-semantics.md "int64", "Dtypes"): without PT_ENABLE_INT64_SUPPORT (lazy default,
common/lazy/utils.cpp) the device holds Long as int32 (backend/helpers/get_n_bytes.h): lazy H2D casts
on the host after a range check that raises (habana_kernels/lazy_kernels.cpp, preProcessIfLongorDouble,
validateDownCast), eager H2D casts without a check (habana_eager/ops/copy_from.cpp), D2H widens on the
host; eager on Gaudi2+ is native int64 unless the flag says otherwise (common/eager/utils.cpp).
"""

import torch

import hpu_shim.testing as hpu_testing

BIG = 2 ** 40

INT64_CHILD = """
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
