"""hpu_shim.compat.connector: the batched transfer every shim connector shares, through real LMCache.

The regression this file exists for (issue 8): a slot mapping shorter than the tokens was accepted
silently -- ``retrieve()`` reported every token restored while only the tokens that had a slot were
written (LMCache 0.3.7: 1000 of 1000 "retrieved", not bit-exact). Every bad slot mapping must now be
refused with ``TransferInputError`` naming it, before anything is written: on a retrieve the KV cache
stays as it was (all zeros here), on a store nothing reaches LMCache's storage.
"""

from __future__ import annotations

import pytest

from hpu_shim.testing.lmcache_roundtrip import SHARED, RunKey

pytestmark = pytest.mark.lmcache

VERSIONS = ("0.3.7", "0.4.2", "0.4.3", "0.5.6")
#: bad slot mapping -> words the error must contain. The slot mapping is on the device, as LMCache's
#: vLLM adapter hands it over: negative and out-of-range slots are found by the device-side verdict.
BAD_SLOTS = {
    "short": "slot mapping has only",
    "float": "dtype",
    "negative": "= -1 is outside the KV cache",
    "out_of_range": "is outside the KV cache",
}
CALLS = ("store", "retrieve")
for _version in VERSIONS:
    for _bad in BAD_SLOTS:
        for _call in CALLS:
            SHARED.register(RunKey(_version, "lazy"), f"malformed-{_call}-{_bad}",
                            {"kind": "malformed", "bad_call": _call, "bad_slots": _bad})


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("bad", BAD_SLOTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_bad_slot_mapping_is_refused_before_any_write(version, bad, call):
    result = SHARED.get(RunKey(version, "lazy"))[f"malformed-{call}-{bad}"]
    assert result.get("error_in") == call, f"LMCache {version} accepted a {bad} slot mapping in {call}: {result}"
    assert result["error"].startswith("TransferInputError: VLLMPaged"), result["error"]
    assert f"batched_{'from' if call == 'store' else 'to'}_gpu" in result["error"], result["error"]
    assert BAD_SLOTS[bad] in result["error"], result["error"]
    if call == "retrieve":
        assert result["written_after_error"] is False, "the refused retrieve wrote into the KV cache"
    else:
        assert result["hit"] == 0, "the refused store still put chunks into LMCache's storage"
        assert result["kv_unchanged"] is True


def test_unsupported_connector_fails_at_construction():
    from hpu_shim.compat.connector import make_unsupported_connector

    class VLLMPagedMemLayerwiseGPUConnector:
        def __init__(self, *args, **kwargs):
            raise AssertionError("LMCache's constructor must not run")

    cls = make_unsupported_connector(VLLMPagedMemLayerwiseGPUConnector, "0.3.7", "layerwise needs CUDA streams",
                                     "Set use_layerwise: false.")
    assert cls.__name__ == "VLLMPagedMemLayerwiseGPUConnector" and issubclass(cls, VLLMPagedMemLayerwiseGPUConnector)
    with pytest.raises(NotImplementedError, match="LMCache 0.3.7.*layerwise needs CUDA streams.*use_layerwise: false"):
        cls(128, 4)


def test_as_four_d_views_flat_layers_in_place():
    """vllm-gaudi < 0.11.2's flat (K, V, scales...) become [rows, 1, H, D] views of the same memory."""
    import torch

    from hpu_shim.compat.connector import KVPair, as_four_d

    k, v = torch.arange(48.).view(12, 2, 2), torch.arange(48., 96.).view(12, 2, 2)
    (pair,) = as_four_d([(k, v, None, None)])
    assert isinstance(pair, KVPair) and pair.shape == (2, 12, 1, 2, 2) and pair.dtype == torch.float32
    pair[0][3, 0, 1, 0] = -1.0
    assert k[3, 1, 0] == -1.0  # a view, not a copy
    four = KVPair((torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)))
    assert as_four_d([four])[0] is four  # already 4-D (vllm-gaudi's TensorTuple): kept as given
