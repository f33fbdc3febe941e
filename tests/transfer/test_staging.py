"""hpu_shim.transfer.staging: one buffer reused across calls, never above its stated bound."""

from __future__ import annotations

import threading

import pytest

from hpu_shim.transfer import staging


@pytest.fixture
def limit():
    old = staging.LIMIT
    staging.set_limit(1 << 20)
    yield 1 << 20
    staging.set_limit(old)


def test_buffer_is_reused_and_grows_to_a_power_of_two_within_the_limit(limit):
    with staging.lease(1000, False) as a:
        first = a.data_ptr()
        assert a.numel() == 1000 and a.storage_offset() == 0
    with staging.lease(900, False) as b:
        assert b.data_ptr() == first  # reused, from its first byte
    with staging.lease(5000, False) as c:
        assert c.numel() == 5000
    assert staging.retained_bytes() == 8192
    with staging.lease(limit, False):
        pass
    assert staging.retained_bytes() == limit


def test_larger_requests_and_concurrent_calls_get_temporary_buffers(limit):
    with staging.lease(100, False):
        kept = staging.retained_bytes()
    with staging.lease(limit + 1, False) as big:
        assert big.numel() == limit + 1
    assert staging.retained_bytes() == kept  # nothing above the limit is kept
    with staging.lease(100, False) as held:
        seen = []
        t = threading.Thread(target=lambda: seen.append(_lease_ptr(100)))
        t.start()
        t.join()
        assert seen and seen[0] != held.data_ptr()  # another thread never shares the leased buffer


def _lease_ptr(n):
    with staging.lease(n, False) as buf:
        return buf.data_ptr()


def test_set_limit_drops_a_buffer_above_the_new_bound(limit):
    with staging.lease(limit, False):
        pass
    staging.set_limit(4096)
    assert staging.retained_bytes() == 0
    with pytest.raises(ValueError, match=">= 0 bytes"):
        staging.set_limit(-1)


def test_verdict_buffers_are_per_thread():
    mine = staging.verdict_buffer(False)
    assert staging.verdict_buffer(False) is mine
    other = []
    t = threading.Thread(target=lambda: other.append(staging.verdict_buffer(False)))
    t.start()
    t.join()
    assert other[0] is not mine


def test_device_buffer_is_reused_and_bounded_like_the_host_one(limit):
    import torch

    with staging.device_lease(100, torch.float16, torch.device("cpu")) as a:
        first = a.data_ptr()
        assert a.numel() == 100 and a.dtype == torch.float16
    with staging.device_lease(60, torch.float16, torch.device("cpu")) as b:
        assert b.data_ptr() == first
    assert staging.retained_device_bytes() == 256  # 128 elements of 2 bytes: a power of two
    with staging.device_lease(limit, torch.float16, torch.device("cpu")) as big:  # 2 x limit bytes: temporary
        assert big.numel() == limit
    assert staging.retained_device_bytes() <= limit
