"""hpu_shim.transfer.device: the mode, index dtype and pinning the transfer path reads, as the bridge reports them."""

from __future__ import annotations

import pytest
import torch
from _helpers import run_py

from hpu_shim.transfer import device


def test_cpu_facts():
    fx = device.facts(torch.device("cpu"))
    assert (fx.kind, fx.lazy, fx.index_dtype, fx.word_views, fx.pinned) == ("cpu", False, torch.int64, True, False)
    assert fx.mark_step() is None and fx.synchronize() is None


@pytest.mark.parametrize("value, lazy", [(None, False), ("0", False), ("1", True), ("", False)])
def test_mode_from_the_environment_without_a_bridge(value, lazy):
    env = {} if value is None else {"PT_HPU_LAZY_MODE": value}
    proc = run_py("""
        from hpu_shim.testing import results
        from hpu_shim.transfer import device
        results.emit(device.is_lazy())
    """, env=env)
    assert proc.results == [lazy]


@pytest.mark.parametrize("mode", ["0", "1"])
def test_hpu_facts_follow_the_bridge(mode):
    proc = run_py("""
        import torch
        from hpu_shim import testing
        from hpu_shim.testing import results
        testing.install_emulator()
        from hpu_shim.transfer import device
        fx = device.facts(torch.device("hpu"))
        try:
            probe = torch.empty(4, pin_memory=True).is_pinned()
        except RuntimeError:
            probe = False
        with testing.count() as c:
            fx.mark_step()
            fx.synchronize()
        results.emit({"lazy": fx.lazy, "bridge_lazy": testing.is_lazy(), "index": str(fx.index_dtype),
                      "words": fx.word_views, "pinned": fx.pinned, "probe": probe,
                      "mark_step": c.mark_step_calls, "sync": c.synchronize_calls})
    """, env={"PT_HPU_LAZY_MODE": mode})
    (r,) = proc.results
    assert r["lazy"] == r["bridge_lazy"] == (mode == "1")
    assert r["index"] == "torch.int32" and r["words"] is False and r["pinned"] == r["probe"]
    assert r["mark_step"] == (1 if mode == "1" else 0) and r["sync"] == 1  # eager: mark_step is never called
