"""Every rank gets the same number of batches (DDP-safe), chosen up front and changeable at resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packing.stream import ShardStream
from tests.packing import test_stream as shared

torch = pytest.importorskip("torch")

from packing.torch import IGNORE_INDEX, StreamLoader, to_device  # noqa: E402

prose_shards = shared.prose_shards


def resume_two_to_three(folder: Path, balance_after: str, *, batch_size: int = 4, steps: int = 37):
    """Two ranks take `steps` batches, then three ranks finish the epoch from their state."""
    two = [
        StreamLoader(
            ShardStream(folder, rank=r, world_size=2, seed=7, with_index=True), batch_size=batch_size
        )
        for r in range(2)
    ]
    seen: list[int] = []
    for loader in two:
        for i, batch in enumerate(loader):
            seen += batch["sample_id"][~batch["is_padding"]].tolist()
            if i + 1 == steps:
                break
    state = two[0].state_dict()
    assert state == two[1].state_dict()
    batches, padded = [], 0
    for r in range(3):
        loader = StreamLoader(
            ShardStream(folder, rank=r, world_size=3, seed=7, with_index=True, balance=balance_after),
            batch_size=batch_size,
        )
        loader.load_state_dict(state)
        count = 0
        for batch in loader:
            count += 1
            pad = (
                batch["is_padding"]
                if "is_padding" in batch
                else torch.zeros(len(batch["sample_id"]), dtype=bool)
            )
            padded += int(pad.sum())
            seen += batch["sample_id"][~pad].tolist()
            if pad.any():  # a repeat carries no loss
                assert (to_device(batch, "cpu")["labels"][pad] == IGNORE_INDEX).all()
        batches.append(count)
    return batches, seen, padded


def test_elastic_resume_pads_every_rank_to_the_same_number_of_batches(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    batches, seen, padded = resume_two_to_three(prose_shards, "pad")
    assert len(set(batches)) == 1  # no rank waits alone in a collective
    remaining = n - 2 * 4 * 37
    assert remaining % 3  # the case that used to give ranks different counts
    assert padded == 3 * -(-remaining // 3) - remaining
    assert sorted(seen) == list(range(n))  # every real sample exactly once


def test_balance_can_change_at_resume_to_drop(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    batches, seen, padded = resume_two_to_three(prose_shards, "drop")
    assert len(set(batches)) == 1 and padded == 0
    remaining = n - 2 * 4 * 37
    assert len(seen) == len(set(seen)) == n - remaining % 3  # the leftover is skipped this epoch


def test_uneven_is_still_available_and_differs_by_one(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    sizes = [len(ShardStream(prose_shards, rank=r, world_size=3, balance="uneven")) for r in range(3)]
    assert sum(sizes) == n and max(sizes) - min(sizes) == 1
    with pytest.raises(ValueError, match="balance must be one of"):
        ShardStream(prose_shards, balance="even")


def test_padding_repeats_the_start_of_the_epoch_whatever_the_resume_point(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    first = shared.ids_of(ShardStream(prose_shards, seed=2, with_index=True))[: 3 - n % 3]
    tails = []
    for resumed_at in (0, 300):
        streams = shared.ranks(prose_shards, 3, seed=2)
        if resumed_at:
            state = streams[0].state_dict() | {"consumed": resumed_at}
            for s in streams:
                s.load_state_dict(state)
        tails.append(sorted(int(x["sample_id"]) for s in streams for x in s if x["is_padding"]))
    assert tails[0] == tails[1] == sorted(first)
    assert np.all([len(s) for s in shared.ranks(prose_shards, 3)] == np.full(3, -(-n // 3)))
