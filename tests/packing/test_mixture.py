"""Mixtures of shard folders: weighted deterministic interleaving, different seq_len, per-source passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packing.format import ShardFormatError
from packing.stream import ShardStream
from tests.conftest import CL100K_OFFLINE
from tests.packing import test_stream as shared

prose_shards = shared.prose_shards  # 64-token rows


@pytest.fixture(scope="session")
def long_shards(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_path: Path, prose_texts: list[str]
) -> Path:
    """Same tokenizer, 128-token rows, the texts in another order: a second source of another length."""
    out = tmp_path_factory.mktemp("long") / "shards"
    return shared.build_folder(prose_texts[::-1], str(bpe_tokenizer_path), out, 128, 16)


@pytest.fixture(scope="session")
def other_tokenizer_shards(tmp_path_factory: pytest.TempPathFactory, prose_texts: list[str]) -> Path:
    out = tmp_path_factory.mktemp("cl100k") / "shards"
    return shared.build_folder(prose_texts[:20], CL100K_OFFLINE, out, 64, 64)


def keys(samples) -> list[tuple[int, int]]:
    return [(int(s["source_id"]), int(s["sample_id"])) for s in samples if not s.get("is_padding", False)]


def test_realized_proportions_track_the_weights_at_every_prefix(
    prose_shards: Path, long_shards: Path
) -> None:
    stream = ShardStream(
        [(prose_shards, 3.0), (long_shards, 1.0)], seed=4, with_index=True, mixture_period=1000
    )
    drawn = []
    lengths = set()
    for sample in stream:
        drawn.append(int(sample["source_id"]))
        lengths.add((int(sample["source_id"]), len(sample["input_ids"])))
    assert lengths == {(0, 64), (1, 128)}  # each source keeps its own sequence length
    is_first = np.array(drawn) == 0
    prefix = np.cumsum(is_first)
    k = np.arange(1, len(drawn) + 1)
    assert np.abs(prefix - 0.75 * k).max() <= 1.0
    # inside one period the apportionment is exact
    assert prefix[999] == 750


def test_a_mixture_epoch_ends_when_a_source_has_given_all_its_samples(
    prose_shards: Path, long_shards: Path
) -> None:
    mixture = [(prose_shards, 3.0), (long_shards, 1.0)]
    stream = ShardStream(mixture, seed=4, with_index=True)
    n0 = ShardStream(prose_shards).samples_per_epoch
    n1 = ShardStream(long_shards).samples_per_epoch
    epoch0 = keys(stream)
    assert len(epoch0) == stream.samples_per_epoch
    first = [x for s, x in epoch0 if s == 0]
    second = [x for s, x in epoch0 if s == 1]
    assert sorted(first) == list(range(n0))  # the scarce source: one whole pass, each sample once
    assert epoch0[-1][0] == 0
    assert len(set(second)) == len(second) < n1  # the other: part of a pass, no repeats

    # the next mixture epoch continues the second source's pass before starting a new one
    epoch1 = keys(stream)
    second_next = [x for s, x in epoch1 if s == 1]
    rest = n1 - len(second)
    assert sorted(second + second_next[:rest]) == list(range(n1))
    assert stream.epoch == 2


def test_mixture_exactly_once_across_ranks_and_elastic_resume(prose_shards: Path, long_shards: Path) -> None:
    mixture = [(prose_shards, 1.0), (long_shards, 2.0)]
    order = keys(ShardStream(mixture, seed=6, with_index=True))
    four = [ShardStream(mixture, rank=r, world_size=4, seed=6, with_index=True) for r in range(4)]
    taken = [[next(it) for _ in range(50)] for it in map(iter, four)]
    state = four[0].state_dict()
    assert all(s.state_dict() == state for s in four) and state["consumed"] == 200
    three = [ShardStream(mixture, rank=r, world_size=3, seed=6, with_index=True) for r in range(3)]
    for s in three:
        s.load_state_dict(state)
    rest = [keys(s) for s in three]
    for r in range(4):
        assert keys(taken[r]) == order[r:200:4]
    for r in range(3):
        assert rest[r] == order[200 + r :: 3]


def test_mixture_order_is_deterministic_and_seeded(prose_shards: Path, long_shards: Path) -> None:
    mixture = [(prose_shards, 1.0), (long_shards, 1.0)]
    a = keys(ShardStream(mixture, seed=1, with_index=True, samples_per_epoch=300))
    b = keys(ShardStream(mixture, seed=1, with_index=True, samples_per_epoch=300))
    c = keys(ShardStream(mixture, seed=2, with_index=True, samples_per_epoch=300))
    assert a == b and a != c and len(a) == 300
    # which source comes when does not depend on the seed, only which sample of it
    assert [s for s, _ in a] == [s for s, _ in c]


def test_tokenizer_fingerprint_mismatch_names_the_folder(
    prose_shards: Path, other_tokenizer_shards: Path
) -> None:
    with pytest.raises(
        ShardFormatError, match=rf"{other_tokenizer_shards}/index.json: tokenizer fingerprint"
    ):
        ShardStream([(prose_shards, 1.0), (other_tokenizer_shards, 1.0)])


def test_a_weight_too_small_for_the_period_is_refused(prose_shards: Path, long_shards: Path) -> None:
    with pytest.raises(ValueError, match="raise mixture_period"):
        ShardStream([(prose_shards, 1.0), (long_shards, 1e-6)], mixture_period=100)


def test_mixture_state_refuses_other_weights(prose_shards: Path, long_shards: Path) -> None:
    state = ShardStream([(prose_shards, 1.0), (long_shards, 1.0)]).state_dict()
    with pytest.raises(ValueError, match="other shard folders"):
        ShardStream([(prose_shards, 2.0), (long_shards, 1.0)]).load_state_dict(state)
