"""Tensors on the emulated hpu device: placement, transfers, aliasing, device rules."""

import copy
import gc
import io

import pytest
import torch

import hpu_shim.testing as hpu_testing

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.int64]


def _host_values(dtype, n=64):
    if dtype.is_floating_point:
        return torch.randn(n, dtype=torch.float32).to(dtype)
    return torch.randint(-(2**40), 2**40, (n,), dtype=dtype)


def test_device_type_is_hpu(emulated_hpu):
    x = torch.ones(3).to("hpu")
    assert x.device.type == "hpu" and x.device == torch.device("hpu:0")
    assert x.is_hpu and not x.is_cpu and not x.is_cuda
    assert torch.device("hpu").type == "hpu"
    assert (x + 1).device.type == "hpu"


@pytest.mark.parametrize("factory", [
    lambda: torch.empty(2, 3, device="hpu"),
    lambda: torch.zeros(2, 3, device="hpu"),
    lambda: torch.ones(2, 3, device="hpu"),
    lambda: torch.full((2, 3), 7.0, device="hpu"),
    lambda: torch.arange(6, device="hpu").view(2, 3),
    lambda: torch.randn(2, 3, device="hpu"),
    lambda: torch.tensor([[1, 2, 3], [4, 5, 6]], device="hpu"),
    lambda: torch.empty_strided((2, 3), (1, 2), device=torch.device("hpu", 0)),
])
def test_factories_land_on_hpu(emulated_hpu, factory):
    t = factory()
    assert t.device.type == "hpu" and t.shape == (2, 3)
    assert t.cpu().device.type == "cpu"


def test_factory_values(emulated_hpu):
    assert torch.equal(torch.zeros(4, device="hpu").cpu(), torch.zeros(4))
    assert torch.equal(torch.full((3,), 7, device="hpu").cpu(), torch.full((3,), 7))
    assert torch.equal(torch.arange(5, device="hpu").cpu(), torch.arange(5))
    assert torch.equal(torch.tensor([1, 2], device="hpu").cpu(), torch.tensor([1, 2]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_roundtrip_bit_exact(emulated_hpu, dtype):
    src = _host_values(dtype)
    dev = src.to("hpu")
    assert dev.dtype == dtype and dev.device.type == "hpu"
    back = dev.cpu()
    assert back.device.type == "cpu" and back.dtype == dtype
    assert torch.equal(back.view(torch.uint8), src.view(torch.uint8))
    assert torch.equal(dev.to("cpu"), src)
    # The host copy is independent of device memory.
    back.zero_()
    assert torch.equal(dev.cpu(), src)


def test_copy_both_directions(emulated_hpu):
    dev = torch.empty(8, dtype=torch.float16, device="hpu")
    src = torch.arange(8, dtype=torch.float16)
    dev.copy_(src)
    out = torch.empty(8, dtype=torch.float16)
    out.copy_(dev)
    assert torch.equal(out, src)


def test_view_writes_through_to_base(emulated_hpu):
    x = torch.zeros(2, 3, device="hpu")
    x.view(-1)[3] = 1
    assert x.cpu()[1, 0] == 1
    x[:1].fill_(5)
    assert torch.equal(x.cpu()[0], torch.full((3,), 5.0))
    x.select(1, 2).zero_()
    x.narrow(0, 1, 1).add_(2)
    x.t()[1].mul_(10)
    expected = torch.tensor([[5.0, 50.0, 0.0], [3.0, 20.0, 2.0]])
    assert torch.equal(x.cpu(), expected)


def test_kv_cache_index_copy_through_view(emulated_hpu):
    nb, bs, h, d = 4, 8, 2, 4
    cache = torch.zeros(nb, bs, h, d, dtype=torch.bfloat16, device="hpu")
    slots = torch.tensor([0, 9, 17, 31], device="hpu")
    src = torch.arange(4 * h * d, dtype=torch.bfloat16).view(4, h * d).to("hpu")
    cache.view(nb * bs, h * d).index_copy_(0, slots, src)
    host = cache.cpu().view(nb * bs, h * d)
    assert torch.equal(host[slots.cpu()], src.cpu())
    assert host.sum() == src.cpu().float().sum()
    back = cache.view(nb * bs, h * d).index_select(0, slots)
    assert back.device.type == "hpu" and torch.equal(back.cpu(), src.cpu())


def test_slice_aliases_and_data_ptr(emulated_hpu):
    t = torch.zeros(10, 4, device="hpu")
    part = t[:3]
    part.fill_(1)
    assert t.cpu()[:3].eq(1).all() and t.cpu()[3:].eq(0).all()
    assert part.data_ptr() == t.data_ptr()
    assert t[2:].data_ptr() == t.data_ptr() + 2 * 4 * t.element_size()
    s = t.untyped_storage()
    assert s.device.type == "hpu" and s.nbytes() == 160
    assert s.data_ptr() == t[5:].untyped_storage().data_ptr() == t.data_ptr()
    other = torch.zeros(10, 4, device="hpu")
    assert other.data_ptr() != t.data_ptr()
    assert t.data_ptr() == t.data_ptr()  # stable


def test_shape_ops(emulated_hpu):
    src = torch.arange(24.0).view(2, 3, 4)
    x = src.to("hpu")
    cases = {
        "contiguous": (x.transpose(0, 2).contiguous(), src.transpose(0, 2).contiguous()),
        "reshape": (x.reshape(6, 4), src.reshape(6, 4)),
        "flatten": (x.flatten(), src.flatten()),
        "permute": (x.permute(2, 0, 1), src.permute(2, 0, 1)),
        "transpose": (x.transpose(1, 2), src.transpose(1, 2)),
        "select": (x.select(1, 1), src.select(1, 1)),
        "narrow": (x.narrow(2, 1, 2), src.narrow(2, 1, 2)),
        "stack": (torch.stack([x, x * 2]), torch.stack([src, src * 2])),
        "cat": (torch.cat([x, x], dim=1), torch.cat([src, src], dim=1)),
    }
    for name, (got, want) in cases.items():
        assert got.device.type == "hpu", name
        assert got.shape == want.shape and got.stride() == want.stride(), name
        assert torch.equal(got.cpu(), want), name
    parts = x.unbind(0)
    assert len(parts) == 2 and all(p.device.type == "hpu" for p in parts)
    parts[1].zero_()  # unbind returns views
    assert x.cpu()[1].eq(0).all()
    assert x.transpose(0, 2).contiguous().is_contiguous()
    assert not x.transpose(0, 2).is_contiguous()


def test_reshape_of_noncontiguous_copies(emulated_hpu):
    x = torch.arange(6.0, device="hpu").view(2, 3)
    y = x.t().reshape(-1)  # needs a copy: must not alias
    y.zero_()
    assert torch.equal(x.cpu(), torch.arange(6.0).view(2, 3))


def test_index_select_and_index_copy_need_device_index(emulated_hpu):
    x = torch.arange(10.0, device="hpu")
    with pytest.raises(RuntimeError, match="same device.*hpu:0 and cpu"):
        x.index_select(0, torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="same device"):
        x.index_copy_(0, torch.tensor([1]), torch.ones(1, device="hpu"))
    # advanced indexing accepts host indices (as on CUDA)
    assert torch.equal(x[torch.tensor([1, 3])].cpu(), torch.tensor([1.0, 3.0]))
    x[torch.tensor([0])] = torch.tensor([42.0], device="hpu")
    assert x.cpu()[0] == 42


@pytest.mark.parametrize("op", [
    lambda d, h: d + h,
    lambda d, h: h * d,
    lambda d, h: torch.cat([d, h]),
    lambda d, h: torch.equal(d, h),
    lambda d, h: d.index_copy_(0, torch.tensor([0], device="hpu"), h[:1]),
])
def test_mixed_device_ops_raise(emulated_hpu, op):
    d = torch.ones(4, device="hpu")
    h = torch.ones(4)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        op(d, h)


def test_zero_dim_host_scalar_allowed(emulated_hpu):
    d = torch.arange(4.0, device="hpu")
    out = d * torch.tensor(3.0)
    assert out.device.type == "hpu" and torch.equal(out.cpu(), torch.arange(4.0) * 3)
    d.add_(torch.tensor(1.0))
    assert torch.equal(d.cpu(), torch.arange(4.0) + 1)


def test_host_results_and_scalars(emulated_hpu):
    d = torch.tensor([1.5, 2.5], device="hpu")
    assert d[1].item() == 2.5
    assert d.tolist() == [1.5, 2.5]
    assert torch.equal(d, d.clone())
    with pytest.raises(TypeError, match="Use Tensor.cpu"):
        d.numpy()
    assert "device='hpu:0'" in repr(d)


@pytest.mark.parametrize("ctx", [torch.inference_mode, torch.no_grad], ids=["inference", "no_grad"])
def test_views_and_inplace_under_grad_modes(emulated_hpu, ctx):
    with ctx():
        cache = torch.zeros(4, 2, 3, device="hpu")
        flat = cache.view(8, 3)
        flat.index_copy_(0, torch.tensor([1, 6], device="hpu"), torch.ones(2, 3, device="hpu"))
        cache[:1].fill_(2)
        cache.view(-1)[-1] = 9
        host = cache.cpu()
    assert host[0].eq(2).all() and host[3, 0].eq(1).all() and host[3, 1, 2] == 9
    cache.add_(1)  # usable after the block, like a tensor from no_grad
    assert cache.cpu()[0, 0, 0] == 3
    assert host[0, 0, 0] == 2  # the .cpu() taken inside the block was a copy, not an alias


def test_autograd_on_hpu(emulated_hpu):
    w = torch.ones(3, device="hpu", requires_grad=True)
    (w * torch.arange(3.0, device="hpu")).sum().backward()
    assert w.grad.device.type == "hpu"
    assert torch.equal(w.grad.cpu(), torch.arange(3.0))


def test_second_device_index_rejected(emulated_hpu):
    with pytest.raises(RuntimeError, match="one device per process"):
        torch.zeros(2, device="hpu:1")
    with pytest.raises(RuntimeError, match="one device per process"):
        torch.zeros(2).to("hpu:1")


def test_random_ops_use_hpu_generator(emulated_hpu):
    torch.hpu.manual_seed(123)
    a = torch.randn(5, device="hpu").cpu()
    torch.hpu.manual_seed(123)
    b = torch.randn(5, device="hpu").cpu()
    torch.manual_seed(123)  # also seeds hpu, via manual_seed_all (torch calls it for custom devices)
    c = torch.randn(5, device="hpu").cpu()
    assert torch.equal(a, b) and torch.equal(a, c)
    state = torch.hpu.get_rng_state()
    d = torch.rand(3, device="hpu").cpu()
    torch.hpu.set_rng_state(state)
    assert torch.equal(torch.rand(3, device="hpu").cpu(), d)


def test_resize_and_out_variants(emulated_hpu):
    x = torch.zeros(4, device="hpu")
    used = torch.hpu.memory_allocated()
    x.resize_(8)
    assert x.shape == (8,) and x.cpu().shape == (8,)
    assert torch.hpu.memory_allocated() == used + 16
    out = torch.empty(0, device="hpu")
    torch.index_select(torch.arange(5.0, device="hpu"), 0, torch.tensor([4, 0], device="hpu"), out=out)
    assert out.shape == (2,) and torch.equal(out.cpu(), torch.tensor([4.0, 0.0]))


def test_memory_in_use_tracks_allocations(emulated_hpu):
    gc.collect()
    hpu = torch.hpu
    before = hpu.memory_stats()
    t = torch.empty(1 << 20, dtype=torch.uint8, device="hpu")
    during = hpu.memory_stats()
    assert during["InUse"] - before["InUse"] == 1 << 20
    assert during["NumAllocs"] == before["NumAllocs"] + 1
    assert during["ActiveAllocs"] == before["ActiveAllocs"] + 1
    assert during["MaxInUse"] >= during["InUse"]
    v = t.view(1024, 1024)[:10]  # views share the storage: no new allocation
    assert hpu.memory_allocated() == during["InUse"]
    del t
    assert hpu.memory_allocated() == during["InUse"]  # the view keeps the storage alive
    del v
    gc.collect()
    after = hpu.memory_stats()
    assert after["InUse"] == before["InUse"]
    assert after["NumFrees"] == before["NumFrees"] + 1
    assert after["MaxInUse"] >= during["InUse"]
    free, total = hpu.mem_get_info()
    assert total == after["Limit"] and free == after["Limit"] - after["InUse"]


def test_out_of_memory_raises(emulated_hpu):
    limit = torch.hpu.memory_stats()["Limit"]
    hpu_testing.set_memory_limit(torch.hpu.memory_allocated() + 1000)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            torch.empty(2000, dtype=torch.uint8, device="hpu")
        with pytest.raises(RuntimeError, match="out of memory"):
            torch.zeros(600, dtype=torch.uint8, device="hpu").repeat(2)
    finally:
        hpu_testing.set_memory_limit(limit)


def test_storage_deepcopy_and_save(emulated_hpu):
    x = torch.arange(6.0, device="hpu")
    st = x[2:].untyped_storage()
    assert st.device.type == "hpu" and st.nbytes() == 24 and len(st) == 24
    assert st == x.untyped_storage() and st.data_ptr() == x.data_ptr()
    with hpu_testing.count() as c:
        host_bytes = st.cpu()
    assert c.d2h_bytes == 24 and isinstance(host_bytes, torch.UntypedStorage)
    assert torch.equal(torch.frombuffer(bytearray(host_bytes.tolist()), dtype=torch.float32), torch.arange(6.0))
    with pytest.raises(RuntimeError, match="untyped_storage"):
        x.storage()
    y = copy.deepcopy(x)
    assert y.device.type == "hpu" and y.data_ptr() != x.data_ptr() and torch.equal(y.cpu(), x.cpu())
    buf = io.BytesIO()
    torch.save({"kv": x}, buf)
    buf.seek(0)
    z = torch.load(buf)["kv"]
    assert z.device.type == "hpu" and torch.equal(z.cpu(), torch.arange(6.0))
