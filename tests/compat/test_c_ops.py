"""hpu_shim.compat.c_ops: the torch-native stand-in for LMCache's CUDA library, on the emulated HPU.

Host buffers are pinned where the HPU allocator pins (the emulator's default profile does, like
bridge 1.19 on PyTorch >= 2.5), live until LMCache's own free call -- ``uninstall()`` must not free
what LMCache still uses -- and the tensor kernels validate before they write.
"""

from __future__ import annotations

import ctypes
import logging

import pytest

from hpu_shim.compat import c_ops


def _as_lmcache_sees_it(ptr: int, size: int):
    """What LMCache does with the address (``memory_management._allocate_cpu_memory``)."""
    import torch

    return torch.frombuffer((ctypes.c_uint8 * size).from_address(ptr), dtype=torch.uint8)


def test_host_buffers_are_pinned_where_the_hpu_can_pin(emulated_hpu):
    import torch

    ptr = c_ops.alloc_pinned_ptr(4096, 0)
    try:
        buf = _as_lmcache_sees_it(ptr, 4096)
        assert torch.empty(8, pin_memory=True).is_pinned(), "the emulator's default profile pins (bridge 1.19)"
        assert buf.is_pinned() and int(buf.sum()) == 0
        with emulated_hpu.count() as delta:
            buf.to("hpu")
        assert delta.bounce_buffer_bytes == 0, "a copy from the allocation's first byte is a pinned copy"
    finally:
        c_ops.free_pinned_ptr(ptr)


def test_uninstall_does_not_free_what_lmcache_holds(emulated_hpu):
    import hpu_shim

    before = c_ops.live_buffers()
    ptr = c_ops.alloc_pinned_numa_ptr(1 << 16, 0)
    buf = _as_lmcache_sees_it(ptr, 1 << 16)
    buf.fill_(7)
    hpu_shim.install(backend="cpu")
    hpu_shim.uninstall()
    assert c_ops.live_buffers() == before + 1
    assert int(buf[-1]) == 7 and bool((buf == 7).all())  # still LMCache's memory, untouched
    c_ops.free_pinned_numa_ptr(ptr, 1 << 16)
    assert c_ops.live_buffers() == before


def test_free_of_an_unknown_or_freed_pointer_is_reported(caplog):
    ptr = c_ops.alloc_pinned_ptr(64)
    c_ops.free_pinned_ptr(ptr)
    with caplog.at_level(logging.WARNING, logger="hpu_shim"):
        c_ops.free_pinned_ptr(ptr)
    assert f"free of {ptr:#x}" in caplog.text and "nothing was freed" in caplog.text


def test_a_zero_byte_allocation_is_refused():
    with pytest.raises(ValueError, match="0 bytes"):
        c_ops.alloc_pinned_ptr(0)


def _paged(emulated_hpu, layers=2, nb=6, bs=16, h=2, d=8):
    import torch

    gen = torch.Generator().manual_seed(1)
    return [torch.randn(2, nb, bs, h, d, generator=gen).to(torch.bfloat16).to("hpu") for _ in range(layers)]


def test_multi_layer_kv_transfer_round_trip(emulated_hpu):
    import torch

    kv = _paged(emulated_hpu)
    slots = torch.tensor([3, 17, 18, 40, 95, 64], dtype=torch.int64)
    ref = [t.cpu().view(2, -1, 16) for t in kv]
    buf = torch.zeros(2, 2, 8, 16, dtype=torch.bfloat16)
    c_ops.multi_layer_kv_transfer(buf, kv, slots.to("hpu"), "hpu", 96, True, False)  # paged -> buffer
    for li in range(2):
        assert torch.equal(buf[:, li, :6], ref[li][:, slots])
    assert not bool(buf[:, :, 6:].any())
    for t in kv:
        t.zero_()
    c_ops.multi_layer_kv_transfer(buf, kv, slots, "hpu", 96, c_ops_direction("H2D"), False)  # buffer -> paged
    for li, t in enumerate(kv):
        got = t.cpu().view(2, -1, 16)
        assert torch.equal(got[:, slots], ref[li][:, slots])
        got[:, slots] = 0
        assert not bool(got.any()), "a slot outside the mapping was written"


def c_ops_direction(name: str):
    from types import ModuleType

    module = ModuleType("lmcache.c_ops")
    c_ops.build(module)
    return getattr(module.TransferDirection, name)


def test_multi_layer_kv_transfer_validates_before_writing(emulated_hpu):
    import torch

    from hpu_shim.transfer import TransferInputError

    kv = _paged(emulated_hpu)
    before = [t.cpu() for t in kv]
    buf = torch.ones(2, 2, 8, 16, dtype=torch.bfloat16)
    with pytest.raises(TransferInputError, match="outside the KV cache"):
        c_ops.multi_layer_kv_transfer(buf, kv, torch.tensor([1, 2, 96]), "hpu", 96, False, False)
    with pytest.raises(TransferInputError, match="dtype"):
        c_ops.multi_layer_kv_transfer(buf.float(), kv, torch.tensor([1, 2]), "hpu", 96, False, False)
    assert all(torch.equal(t.cpu(), b) for t, b in zip(kv, before)), "a refused transfer wrote into the cache"


def test_raw_device_pointers_are_refused():
    import torch

    with pytest.raises(RuntimeError, match="raw device pointers"):
        c_ops.multi_layer_kv_transfer(torch.zeros(2, 1, 4, 8), torch.tensor([1234, 5678]), torch.arange(4))


def test_cuda_only_kernels_fail_clearly():
    from types import ModuleType

    module = ModuleType("lmcache.c_ops")
    c_ops.build(module)
    with pytest.raises(NotImplementedError, match="lmcache.c_ops.encode_fast_new is a CUDA kernel"):
        module.encode_fast_new()
    with pytest.raises(AttributeError, match="no 'brand_new_kernel'"):
        module.brand_new_kernel  # noqa: B018
    with pytest.raises(RuntimeError, match="PCI bus id"):
        module.get_gpu_pci_bus_id(0)
    assert "stand-in" in module.__hpu_shim_stand_in__
