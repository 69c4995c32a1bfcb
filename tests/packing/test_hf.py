"""Our flattened batches equal transformers' own DataCollatorWithFlattening on the same documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packing.stream import ShardStream
from tests.packing import test_stream as shared

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from packing.hf import FlatteningCollator  # noqa: E402
from packing.torch import IGNORE_INDEX, StreamLoader, to_device  # noqa: E402

prose_shards = shared.prose_shards


def documents(samples: list[dict]) -> list[list[int]]:
    return [
        d.tolist()
        for s in samples
        for d in np.split(np.asarray(s["input_ids"]), np.cumsum(s["doc_lengths"]))[:-1]
        if len(d)
    ]


@pytest.mark.parametrize("return_seq_idx", [False, True])
def test_batch_equals_transformers_flattening_collator(prose_shards: Path, return_seq_idx: bool) -> None:
    samples = [s for _, s in zip(range(6), ShardStream(prose_shards, seed=9), strict=False)]
    ours = FlatteningCollator(return_seq_idx=return_seq_idx)(samples)
    theirs = transformers.DataCollatorWithFlattening(
        return_flash_attn_kwargs=True, return_seq_idx=return_seq_idx
    )([{"input_ids": d} for d in documents(samples)])
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            assert torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key


def test_padding_samples_carry_no_labels_and_compact_ids_widen_on_the_device(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    rank = 2  # with three ranks, one rank's last sample repeats the start of the epoch
    assert n % 3 == 1
    stream = ShardStream(prose_shards, rank=rank, world_size=3, seed=1)
    loader = StreamLoader(stream, batch_size=4, num_workers=2, collate_fn=FlatteningCollator(compact=True))
    batches = list(loader)
    assert all(b["input_ids"].dtype == torch.int32 for b in batches)
    last = batches[-1]
    padded = [s for s in ShardStream(prose_shards, rank=rank, world_size=3, seed=1) if s["is_padding"]]
    assert len(padded) == 1
    tail = int(np.sum(padded[0]["doc_lengths"]))
    assert (last["labels"][0, -tail:] == IGNORE_INDEX).all()
    assert (last["labels"][0, :-tail] != IGNORE_INDEX).any()
    on_device = to_device(last, "cpu")
    assert on_device["input_ids"].dtype == torch.int64 and on_device["cu_seq_lens_q"].dtype == torch.int32
