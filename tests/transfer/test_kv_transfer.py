"""hpu_shim.transfer.kv_transfer: the older API its callers use keeps working, now validated."""

from __future__ import annotations

import pytest
import torch

from hpu_shim.transfer import kv_transfer
from hpu_shim.transfer.validation import TransferInputError

from . import _kv

NB, BS = 6, 128


def _setup():
    kvc = _kv.make_cache("kv", NB, BS, 2, 8, 2, torch.bfloat16)
    name, layers = kv_transfer.normalize(kvc)
    sm = (torch.tensor([4, 1, 2])[:, None] * BS + torch.arange(BS)).flatten()
    want = _kv.slot_major(kvc, "kv", NB, BS)[:, :, sm[:300]]
    return kvc, name, layers, sm, want


def test_normalize_gives_slot_rows_and_keeps_the_block_size():
    _, name, layers, sm, _ = _setup()
    assert name == "vllm-gaudi (K, V) [NB, BS, H, D]" and len(layers) == 2
    assert layers[0][0].shape == (NB * BS, 16) and layers.cache.block_size == BS
    assert kv_transfer._plan(sm, [0], [300], layers).rows == BS
    with pytest.raises(kv_transfer.LayoutError):
        kv_transfer.normalize([torch.zeros(3, 4)])
    assert kv_transfer.bucket(17) == 20


def test_gather_and_scatter_in_every_output_form():
    kvc, _, layers, sm, want = _setup()
    assert torch.equal(kv_transfer.gather(layers, sm, [0, 128], [128, 300]), want)
    out = torch.full((2, 2, 310, 16), 7, dtype=torch.bfloat16)
    assert torch.equal(kv_transfer.gather(layers, sm, [0, 128], [128, 300], lambda: None, out=out), want)
    assert bool((out[:, :, 300:] == 7).all())
    objs = [torch.zeros(2, 2, 256, 16, dtype=torch.bfloat16) for _ in range(2)]
    views = kv_transfer.gather(layers, sm, [0, 128], [128, 300], out=objs)
    assert torch.equal(torch.cat(views, dim=2), want)
    with pytest.raises(TransferInputError, match="gather: out has shape"):
        kv_transfer.gather(layers, sm, [0], [300], out=out[:, :, :10])
    for t in _kv.tensors_of(kvc):
        t.zero_()
    kv_transfer.scatter(layers, want, sm, [0, 128], [128, 300], lambda: None, lambda: None)
    assert torch.equal(_kv.slot_major(kvc, "kv", NB, BS)[:, :, sm[:300]], want)
    for t in _kv.tensors_of(kvc):
        t.zero_()
    kv_transfer.scatter(layers, objs, sm, [0, 128], [128, 300])
    after = _kv.slot_major(kvc, "kv", NB, BS)
    assert torch.equal(after[:, :, sm[:300]], want) and int((after != 0).any(-1).sum()) == 2 * 2 * 300


def test_a_short_slot_mapping_is_refused():
    _, _, layers, sm, want = _setup()
    with pytest.raises(TransferInputError, match="shorter than the tokens"):
        kv_transfer.scatter(layers, want, sm[:200], [0, 128], [128, 300])
