"""hpu_shim.redirects: the table is complete for both backends and classed like Habana's toolkit."""

import pytest

from hpu_shim.backends import CpuBackend, HpuBackend
from hpu_shim.redirects import MATCH, MISMATCH, MODIFIED, REDIRECTS


def test_every_row_is_classed_and_implemented():
    for key, entry in REDIRECTS.items():
        assert entry.category in (MATCH, MODIFIED, MISMATCH), key
        if entry.kind != "namespace":
            for backend in (HpuBackend, CpuBackend):
                assert callable(getattr(backend, entry.op, None)), (key, backend.__name__)
        if entry.category != MATCH:
            assert entry.note, f"{key}: modified/mismatch rows must say what differs"


@pytest.mark.parametrize("name", ["is_available", "device_count", "current_device", "set_device", "synchronize",
                                  "Stream", "Event", "get_device_properties", "empty_cache", "cudart",
                                  "nvtx.range_push", "current_stream", "stream", "mem_get_info"])
def test_lmcache_surface_is_covered(name):
    assert name in REDIRECTS  # the torch.cuda names LMCache 0.3.1 - 0.5.6 call (grep of each release)


def test_table_is_read_only():
    with pytest.raises(TypeError):
        REDIRECTS["x"] = None  # type: ignore[index]
