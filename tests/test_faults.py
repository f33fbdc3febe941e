"""Storage faults between the prefill and the decode process: no crash, no hang past the timeout,
every restored token bit-exact, the rest reported as not retrieved (so vLLM recomputes it).

Same processes and real servers as ``test_hetero.py`` (LMCache 0.3.7 and 0.5.6). The consumer runs
with ``HPU_SHIM_REMOTE_TIMEOUT=1``. Each ``control-*`` run undoes one fix-up for one spec, in the same
process: the defect it shows is what the fix prevents.
"""

from __future__ import annotations

import pytest

from hpu_shim.testing import hetero_run
from test_hetero import FAULT_RELEASES, TOKENS, ok, verdicts

pytestmark = pytest.mark.lmcache
CHUNK = 256
T = hetero_run.TIMEOUT
#: Wall-time ceiling for one bounded phase: the timeout plus room for a loaded 2-core CI machine.
BOUND = T + 9


def restored_prefix(got: dict, tokens: int) -> None:
    """Exactly ``tokens`` tokens restored, bit-exact, really written, nothing else touched."""
    ok(got)
    assert got["retrieved"] == tokens and got["prefix"] is True, got
    assert got["equals_expected"] is True and got["untouched_elsewhere"] is True, got
    assert got["written_slots"] == tokens, got  # reported restored == really written
    if tokens:
        assert got["bit_exact"] is True


@pytest.mark.parametrize("damage", ["truncate", "header"])
@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_unreadable_second_chunk_restores_exactly_the_first(handoff, version, damage):
    got = handoff(version)[f"file-{damage}"]
    assert got["hit"] == TOKENS  # the file exists, so the lookup counts it
    restored_prefix(got, CHUNK)


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_a_chunk_in_the_layerwise_cuda_format_is_rejected_before_the_transfer(handoff, version):
    """KV_T2D (what CUDA's layerwise connector writes) under a chunk key: a miss from there, one WARNING."""
    got = handoff(version)["file-kv_t2d"]
    restored_prefix(got, CHUNK)
    (warning,) = verdicts(got)
    assert "(format)" in warning and "KV_T2D" in warning and "use_layerwise: false" in warning


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_deleted_second_chunk(handoff, version):
    got = handoff(version)["file-delete"]
    assert got["hit"] == CHUNK
    restored_prefix(got, CHUNK)


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_control_without_the_retrieve_fix_the_first_chunk_is_reported_but_never_written(handoff, version):
    runs = handoff(version)
    if "control-retrieve-truncate" not in runs:  # 0.5.x fixed the off-by-one upstream
        return
    got = ok(runs["control-retrieve-truncate"])
    assert got["retrieved"] == CHUNK and got["written_slots"] == 0 and got["equals_expected"] is False


@pytest.mark.parametrize("spec", ["guard-fewer-layers-here", "guard-more-layers-here"])
@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_another_models_chunks_are_a_miss_with_one_warning(handoff, version, spec):
    got = handoff(version)[spec]
    assert got["hit"] == TOKENS  # same model name: LMCache's keys cannot tell
    restored_prefix(got, 0)
    (warning,) = verdicts(got)
    assert "(layers)" in warning and "miss" in warning and "doctor" in warning


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_control_without_the_guards_another_models_kv_is_loaded_or_crashes(handoff, version):
    got = handoff(version)["control-guards-fewer-layers-here"]
    assert not got.get("hung")
    assert "error" in got or (got["retrieved"] > 0 and got["bit_exact"] is False), got


@pytest.mark.parametrize("backend", ["lm", "redis"])
@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_frozen_server_at_lookup_is_a_bounded_miss(handoff, version, backend):
    got = handoff(version)[f"freeze-at-lookup-{backend}"]
    assert got["hit"] == 0 and got["lookup_s"] < BOUND and got["retrieve_s"] < BOUND, got
    restored_prefix(got, 0)
    (warning,) = verdicts(got)
    assert got["spec"]["url"] in warning and "HPU_SHIM_REMOTE_TIMEOUT" in warning
    assert got["close_returned"]


@pytest.mark.parametrize("backend", ["lm", "redis"])
@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_frozen_server_between_lookup_and_retrieve(handoff, version, backend):
    got = handoff(version)[f"freeze-at-retrieve-{backend}"]
    assert got["hit"] == TOKENS and got["retrieve_s"] < BOUND, got
    restored_prefix(got, 0)
    assert len(verdicts(got)) == 1 and got["close_returned"]


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_control_without_the_timeout_a_frozen_server_hangs_the_decode_process(handoff, version):
    got = handoff(version)["control-remote-freeze-lm"]
    assert got.get("hung") is True, got
    assert got["hung_after_s"] >= got["spec"]["deadline"]


@pytest.mark.parametrize("backend", ["lm", "redis"])
@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_server_killed_between_lookup_and_retrieve(handoff, version, backend):
    got = handoff(version)[f"kill-at-retrieve-{backend}"]
    assert got["fault_injected"] == "kill" and got["hit"] == TOKENS and got["retrieve_s"] < BOUND
    restored_prefix(got, 0)
    assert got["close_returned"]


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_redis_close_returns_and_without_the_fix_it_never_does(handoff, version):
    runs = handoff(version)
    for name in ("main-redis", "freeze-at-lookup-redis"):
        got = ok(runs[name])
        assert got["close_returned"] and got["close_s"] < BOUND, (name, got["close_s"])
        assert not any("close did not finish" in w for w in verdicts(got))  # drained, not abandoned
    assert ok(runs["_produce"]["main-redis"])["close_returned"]
    control = ok(runs["control-close-redis"])
    assert control["close_returned"] is False, control["close_s"]


@pytest.mark.parametrize("version", FAULT_RELEASES)
def test_bare_fs_url_stores_and_hits_and_without_the_fix_drops_every_chunk(handoff, version):
    """fs:///PATH: with the fix the chunks are stored and found; without it LMCache has no remote
    backend at all (its parser asserts a host), drops every chunk and still logs them stored."""
    runs = handoff(version)
    stored = ok(runs["_produce"]["bare-fs-url"])
    assert stored["spec"]["url"].startswith("fs:///") and stored["remote_hit"] == TOKENS
    got = ok(runs["bare-fs-url"])
    assert got["hit"] == got["retrieved"] == TOKENS and got["equals_expected"] is True
    control = ok(runs["_produce"]["control-bare-fs-url"])
    assert control["remote_hit"] == 0, control
