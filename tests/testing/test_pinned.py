"""Pinned host memory and the cost of host<->device copies (hpu_shim.testing._pinned).

Facts (docs/gaudi-semantics.md "Pinned memory and copies"): bridge >= 1.19 on PyTorch >= 2.5 has a
pinned host allocator (HPUHooksInterface.cpp, PinnedMemoryAllocator.cpp); a pointer is pinned only
if it is an allocation's first byte (host_memory.cpp, is_host_memory); torch's is_pinned() asks
with the storage start, the copy path with the tensor's data_ptr() (tensor_utils.cpp); an unpinned
copy goes through a bounce buffer filled or drained by a host std::copy (synapse_helpers/device.cpp);
a strided host source is made contiguous on the host first (habana_eager/ops/copy_from.cpp).
"""

import gc

import pytest
import torch

import hpu_shim.testing as hpu_testing
from hpu_shim.testing import _pinned

N = 1024  # float32 elements: 4096 bytes


def test_pin_memory_and_pinned_factories_work(emulated_hpu):
    host = torch.arange(N, dtype=torch.float32)
    pinned = host.pin_memory()
    assert pinned.is_pinned() and not host.is_pinned()
    assert torch.equal(pinned, host) and pinned.data_ptr() != host.data_ptr()
    assert pinned.pin_memory() is pinned  # already pinned: torch returns it as is
    for make in (lambda: torch.empty(N, pin_memory=True), lambda: torch.zeros(4, 8, pin_memory=True),
                 lambda: torch.empty_strided((4, 8), (1, 4), pin_memory=True)):
        t = make()
        assert t.is_pinned() and t.device.type == "cpu"
    assert not torch.ones(2, device="hpu").is_pinned()
    assert not torch.empty(0, pin_memory=True).is_pinned()  # no bytes, no pointer


def test_device_tensors_cannot_be_pinned(emulated_hpu):
    with pytest.raises(RuntimeError, match="Only dense CPU tensors can be pinned"):
        torch.empty(4, device="hpu", pin_memory=True)


def test_unpinned_h2d_goes_through_the_bounce_buffer(emulated_hpu):
    dev = torch.empty(N, device="hpu")
    with hpu_testing.count() as c:
        dev.copy_(torch.ones(N))
    assert (c.h2d_bytes, c.h2d_copies, c.bounce_buffer_bytes, c.host_memcpy_bytes) == (4 * N, 1, 4 * N, 4 * N)


def test_pinned_h2d_from_the_allocation_start_is_direct(emulated_hpu):
    buf = torch.ones(2 * N).pin_memory()
    dev = torch.empty(N, device="hpu")
    with hpu_testing.count() as c:
        dev.copy_(buf[:N])  # starts at the allocation's first byte
    assert (c.h2d_bytes, c.bounce_buffer_bytes, c.host_memcpy_bytes) == (4 * N, 0, 0)
    assert torch.equal(dev.cpu(), buf[:N])


def test_view_at_an_offset_reports_pinned_but_copies_like_unpinned(emulated_hpu):
    buf = torch.arange(2 * N, dtype=torch.float32).pin_memory()
    view = buf[N:]
    assert view.is_pinned()  # torch asks with the storage start
    dev = torch.empty(N, device="hpu")
    with hpu_testing.count() as c:
        dev.copy_(view)  # the bridge asks with data_ptr(): not an allocation start
    assert (c.bounce_buffer_bytes, c.host_memcpy_bytes) == (4 * N, 4 * N)
    assert torch.equal(dev.cpu(), view)
    with hpu_testing.count() as c:
        view.copy_(dev)
    assert c.bounce_buffer_bytes == 4 * N
    with hpu_testing.count() as c:
        buf[:N].copy_(dev)  # D2H into the allocation start: straight into pinned memory
    assert (c.d2h_bytes, c.bounce_buffer_bytes, c.host_memcpy_bytes) == (4 * N, 0, 0)


def test_strided_host_source_is_made_contiguous_on_the_host(emulated_hpu):
    src = torch.arange(2 * N, dtype=torch.float32).view(N, 2).t()  # [2, N], not contiguous
    pinned = torch.empty(N, 2, pin_memory=True)
    pinned.copy_(src.t())
    dev = torch.empty(2, N, device="hpu")
    with hpu_testing.count() as c:
        dev.copy_(src)
    assert (c.h2d_bytes, c.bounce_buffer_bytes, c.host_memcpy_bytes) == (8 * N, 8 * N, 16 * N)
    with hpu_testing.count() as c:
        dev.copy_(pinned.t())  # pinned, but the bridge first makes a contiguous (unpinned) copy
    assert (c.bounce_buffer_bytes, c.host_memcpy_bytes) == (8 * N, 16 * N)
    assert torch.equal(dev.cpu(), src)


def test_d2h_blocking_and_staging(emulated_hpu):
    dev = torch.arange(N, dtype=torch.float32, device="hpu")
    pinned = torch.empty(N, pin_memory=True)
    plain = torch.empty(N)
    cases = {
        "cpu()": lambda: dev.cpu(),
        "to(cpu)": lambda: dev.to("cpu"),
        "copy_ unpinned": lambda: plain.copy_(dev),
        "copy_ pinned": lambda: pinned.copy_(dev),
        "non_blocking pinned": lambda: pinned.copy_(dev, non_blocking=True),
        "non_blocking unpinned": lambda: plain.copy_(dev, non_blocking=True),
        "to(cpu, non_blocking)": lambda: dev.to("cpu", non_blocking=True),
        "item()": lambda: dev[3].item(),
    }
    got = {}
    for name, fn in cases.items():
        with hpu_testing.count() as c:
            fn()
        got[name] = (c.d2h_copies, c.blocking_d2h_copies, c.bounce_buffer_bytes)
    assert got == {
        "cpu()": (1, 1, 4 * N), "to(cpu)": (1, 1, 4 * N), "copy_ unpinned": (1, 1, 4 * N),
        "copy_ pinned": (1, 1, 0), "non_blocking pinned": (1, 0, 0), "non_blocking unpinned": (1, 0, 4 * N),
        "to(cpu, non_blocking)": (1, 0, 4 * N), "item()": (1, 1, 4),
    }
    assert torch.equal(pinned, torch.arange(N, dtype=torch.float32))
    # torch's _to_copy pins its result only for non_blocking copies from CUDA or PrivateUse1 devices;
    # real Gaudi is neither (DeviceType::HPU), so the host copy is unpinned
    assert not dev.to("cpu", non_blocking=True).is_pinned()


def test_freed_pinned_memory_is_forgotten(emulated_hpu):
    gc.collect()
    before = len(_pinned.REGISTRY)
    t = torch.empty(N, pin_memory=True)
    ptr = t.data_ptr()
    assert len(_pinned.REGISTRY) == before + 1 and _pinned.REGISTRY.is_allocation_start(ptr)
    del t
    gc.collect()
    assert len(_pinned.REGISTRY) == before and not _pinned.REGISTRY.is_allocation_start(ptr)


def test_unpinned_factories_are_untouched(emulated_hpu):
    t = torch.empty(3, 4, dtype=torch.float16)
    assert t.shape == (3, 4) and t.dtype == torch.float16 and not t.is_pinned()
    m = torch.empty(2, device="meta")
    assert m.device.type == "meta"
    assert torch.empty(2, device="hpu").device.type == "hpu"


def test_profile_without_a_pinned_allocator_refuses_pinning(run_py):
    code = """
    import hpu_shim.testing as T
    from hpu_shim.testing import results
    T.install_emulator()
    import torch
    out = []
    for fn in (lambda: torch.ones(4).pin_memory(), lambda: torch.empty(4, pin_memory=True)):
        try:
            fn()
            out.append("pinned")
        except RuntimeError as e:
            out.append(str(e))
    out.append(torch.ones(4).is_pinned())
    results.emit(out)
    """
    first, second, pinned = run_py(code, env={"HPU_SHIM_FAKE_HPU_PROFILE": "1.18.0"}).results[0]
    for msg in (first, second):
        assert "doesn't support pinned memory" in msg and "profile 1.18.0" in msg and "pin_memory=False" in msg
    assert pinned is False
