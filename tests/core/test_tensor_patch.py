"""hpu_shim.core.tensor_patch: Tensor.cuda redirects only for in-scope callers; uninstall restores exactly."""

import pytest
import torch


def test_tensor_cuda_in_and_out_of_scope(shim):
    assert "cuda" not in torch.Tensor.__dict__
    shim.install(backend="cpu")
    import lmcache
    import otherpkg

    assert lmcache.tensor_cuda(torch.ones(2)).device == torch.device("cpu")
    with pytest.raises((AssertionError, RuntimeError)):
        otherpkg.tensor_cuda(torch.ones(2))
    with pytest.raises((AssertionError, RuntimeError)):
        torch.ones(2).cuda()  # this test module is out of scope
    shim.uninstall()
    assert "cuda" not in torch.Tensor.__dict__
    assert torch.Tensor.cuda is torch._C.TensorBase.cuda


def test_no_class_patch_while_the_rewrite_tier_covers_scope(shim):
    shim.install(backend="cpu")
    import lmcache

    assert lmcache.tensor_cuda(torch.ones(1)).device.type == "cpu"  # via the rewrite tier
    assert "cuda" not in torch.Tensor.__dict__  # out-of-scope Tensor.cuda pays nothing
    assert shim.status()["tensor_cuda_class_patch"] is None


def test_class_patch_covers_code_compiled_before_install(shim, pkgs):
    (pkgs / "lmcache" / "dyn.py").write_text("def go(t):\n    return getattr(t, 'cuda')()\n")
    import lmcache.dyn  # compiled without the rewrite tier

    with pytest.warns(UserWarning):
        shim.install(backend="cpu")
    assert "lmcache.dyn" in shim.status()["tensor_cuda_class_patch"]
    assert lmcache.dyn.go(torch.ones(1)).device.type == "cpu"
    assert any(r.api == "Tensor.cuda" and r.site == "lmcache/dyn.py:2" for r in shim.report())
    with pytest.raises((AssertionError, RuntimeError)):
        torch.ones(1).cuda()  # this test module is still out of scope
    shim.uninstall()
    assert "cuda" not in torch.Tensor.__dict__


def test_unbound_tensor_methods_in_scope(shim, pkgs):
    (pkgs / "lmcache" / "unbound.py").write_text(
        "import torch\ndef go(t):\n    return torch.Tensor.cuda(t), torch.Tensor.to(t, 'cuda:0')\n")
    shim.install(backend="cpu")
    import lmcache.unbound

    a, b = lmcache.unbound.go(torch.ones(1))
    assert a.device.type == b.device.type == "cpu"


def test_to_and_device_kwargs_in_scope_only(shim):
    shim.install(backend="cpu")
    import lmcache
    import otherpkg

    assert lmcache.tensor_to(torch.ones(1)).device.type == "cpu"
    assert lmcache.tensor_to(torch.ones(1), "cuda:1").device.type == "cpu"
    assert lmcache.factory().device.type == "cpu"
    assert lmcache.tensor_to(torch.ones(1), torch.float64).dtype == torch.float64  # non-device args untouched
    with pytest.raises((AssertionError, RuntimeError)):
        otherpkg.factory()
    with pytest.raises((AssertionError, RuntimeError)):
        otherpkg.tensor_to(torch.ones(1))


def test_tensor_to_is_never_patched(shim):
    before = torch.Tensor.to
    shim.install(backend="cpu")
    import lmcache  # noqa: F401

    assert torch.Tensor.to is before
    assert shim.status()["patched_attributes"] == []
