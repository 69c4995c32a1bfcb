"""The torch adapter with a real DataLoader and real worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from packing.stream import ShardStream  # noqa: E402
from packing.torch import IGNORE_INDEX, StreamLoader, collate  # noqa: E402
from tests.packing import test_stream as shared  # noqa: E402

SEQ_LEN = shared.SEQ_LEN
prose_shards = shared.prose_shards  # the same real shard folder fixture
prose_rows = shared.prose_rows


def assert_same_batch(got: dict, want: dict) -> None:
    """The same keys, and for every key the same dtype and values."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def loader_ids(loader: StreamLoader) -> list[int]:
    """Sample ids the trainer received, leaving out the repeats that pad ranks to an even share."""
    return [
        x
        for batch in loader
        for x, pad in zip(batch["sample_id"].tolist(), batch["is_padding"].tolist(), strict=True)
        if not pad
    ]


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_reads_every_sample_once_in_the_stream_order(
    prose_shards: Path, world_size: int, num_workers: int
) -> None:
    everything = []
    for rank in range(world_size):
        expected = shared.ids_of(
            ShardStream(prose_shards, rank=rank, world_size=world_size, seed=5, with_index=True)
        )
        stream = ShardStream(prose_shards, rank=rank, world_size=world_size, seed=5, with_index=True)
        loader = StreamLoader(stream, batch_size=32, num_workers=num_workers)
        got = loader_ids(loader)
        assert got == expected  # workers interleave back into the rank's own order
        assert stream.epoch == 1
        everything += got
    n = ShardStream(prose_shards).samples_per_epoch
    assert sorted(everything) == list(range(n))


def test_collate_builds_labels_positions_and_cu_seqlens(prose_shards: Path, prose_rows) -> None:
    ids, lengths = prose_rows
    stream = ShardStream(prose_shards, seed=1, with_index=True)
    samples = []
    for s in stream:
        if len(s["doc_lengths"]) > 1 and sum(s["doc_lengths"]) < SEQ_LEN:  # several documents and padding
            samples.append(s)
        if len(samples) == 3:
            break
    assert len(samples) == 3
    batch = collate(samples)
    assert batch["input_ids"].shape == (3, SEQ_LEN) and batch["input_ids"].dtype == torch.int32
    bounds = [0]
    for row, s in enumerate(samples):
        k = int(s["sample_id"])
        np.testing.assert_array_equal(batch["input_ids"][row].numpy(), ids[k].astype(np.int32))
        doc = lengths[k].tolist()
        used = sum(doc)
        labels = batch["labels"][row].tolist()
        starts = np.cumsum([0, *doc[:-1]]).tolist()
        for i in range(SEQ_LEN):
            if i >= used or i in starts:
                assert labels[i] == IGNORE_INDEX
            else:
                assert labels[i] == int(ids[k][i])
        assert batch["position_ids"][row].tolist() == [p for n in doc for p in range(n)] + list(
            range(SEQ_LEN - used)
        )
        for n in [*doc, SEQ_LEN - used]:
            bounds.append(bounds[-1] + n)
    assert batch["cu_seqlens"].tolist() == bounds and batch["cu_seqlens"].dtype == torch.int32
    assert batch["max_seqlen"] == max(np.diff(bounds))

    flat = collate(samples, flatten=True)
    assert flat["input_ids"].shape == (1, 3 * SEQ_LEN)
    assert torch.equal(flat["input_ids"].reshape(3, SEQ_LEN), batch["input_ids"])
    assert torch.equal(flat["cu_seqlens"], batch["cu_seqlens"])


def test_collate_refuses_to_stack_rows_of_different_lengths(prose_shards: Path) -> None:
    sample = next(iter(ShardStream(prose_shards)))
    short = {"input_ids": sample["input_ids"][:32], "doc_lengths": np.array([32], np.int32)}
    with pytest.raises(ValueError, match="flatten=True"):
        collate([sample, short])
    assert collate([sample, short], flatten=True)["input_ids"].shape == (1, SEQ_LEN + 32)


def test_loader_state_counts_what_the_trainer_received_and_resumes_exactly(prose_shards: Path) -> None:
    def make(num_workers: int = 2) -> StreamLoader:
        stream = ShardStream(prose_shards, rank=1, world_size=2, seed=8, with_index=True)
        return StreamLoader(
            stream, batch_size=8, num_workers=num_workers, **({"prefetch_factor": 4} if num_workers else {})
        )

    whole = loader_ids(make(num_workers=0))
    loader = make()
    got = []
    for i, batch in enumerate(loader):
        got += batch["sample_id"].tolist()
        if i == 9:  # workers have read well ahead by now; the state must not count that
            state = loader.state_dict()
            break
    assert state["consumed"] == 2 * 80
    assert got + loader_ids(loader) == whole  # the same loader, iterated again, picks up after the break
    resumed = make()
    resumed.load_state_dict(state)
    assert len(resumed) == -(-(len(whole) - 80) // 8)
    assert got + loader_ids(resumed) == whole


def test_loader_elastic_resume_from_four_ranks_to_three(prose_shards: Path) -> None:
    n = ShardStream(prose_shards).samples_per_epoch
    seen = []
    states = []
    for rank in range(4):
        loader = StreamLoader(
            ShardStream(prose_shards, rank=rank, world_size=4, seed=3, with_index=True),
            batch_size=4,
            num_workers=2,
        )
        for i, batch in enumerate(loader):
            seen += batch["sample_id"].tolist()
            if i == 14:
                states.append(loader.state_dict())
                break
    assert all(s == states[0] for s in states)
    for rank in range(3):
        loader = StreamLoader(
            ShardStream(prose_shards, rank=rank, world_size=3, seed=3, with_index=True), batch_size=16
        )
        loader.load_state_dict(states[0])
        seen += loader_ids(loader)
    assert sorted(seen) == list(range(n))


def test_dataloader_workers_read_a_remote_folder_through_their_cache(
    prose_shards: Path, tmp_path: Path
) -> None:
    url = f"file://{prose_shards}"  # a real fsspec filesystem: shards go through the cache
    for shuffle_block in (None, 128):
        kw = {"rank": 0, "world_size": 2, "seed": 4, "with_index": True, "shuffle_block": shuffle_block}
        expected = [int(s["sample_id"]) for s in ShardStream(prose_shards, **kw)]
        remote = ShardStream(url, cache_dir=tmp_path / str(shuffle_block), **kw)
        assert loader_ids(StreamLoader(remote, batch_size=32, num_workers=2)) == expected


@pytest.mark.parametrize("flatten", [False, True])
def test_compact_batches_expand_on_the_device_to_the_full_collate(prose_shards: Path, flatten: bool) -> None:
    from packing.torch import to_device

    samples = list(ShardStream(prose_shards, rank=2, world_size=3, seed=6, with_index=True))[-7:]
    assert any(s["is_padding"] for s in samples)  # the padding sample at the end of the rank's share
    full = to_device(collate(samples, flatten=flatten), "cpu")
    compact = collate(samples, flatten=flatten, compact=True)
    assert "labels" not in compact and compact["input_ids"].dtype == torch.int32
    expanded = to_device(compact, "cpu")
    assert_same_batch(expanded, full)  # the same batch a model is called with: no extra keys


def reference_collate(samples: list[dict], ignore_index: int = IGNORE_INDEX) -> dict[str, np.ndarray]:
    """The full layout written out row by row and document by document, to check the vectorized one."""
    ids, labels, positions, bounds = [], [], [], [0]
    for s in samples:
        row = np.asarray(s["input_ids"]).astype(np.int64)
        lab = np.full(len(row), ignore_index, dtype=np.int64)
        pos = np.zeros(len(row), dtype=np.int64)
        at = 0
        for n in [int(x) for x in s["doc_lengths"] if x > 0]:
            if not s.get("is_padding", False):
                lab[at + 1 : at + n] = row[at + 1 : at + n]
            pos[at : at + n] = np.arange(n)
            at += n
            bounds.append(bounds[-1] + n)
        if at < len(row):
            pos[at:] = np.arange(len(row) - at)
            bounds.append(bounds[-1] + len(row) - at)
        ids.append(row), labels.append(lab), positions.append(pos)
    return {
        "input_ids": np.concatenate(ids),
        "labels": np.concatenate(labels),
        "position_ids": np.concatenate(positions),
        "cu_seqlens": np.array(bounds),
    }


def test_vectorized_collate_equals_the_row_by_row_reference(prose_shards: Path) -> None:
    samples = list(ShardStream(prose_shards, rank=2, world_size=3, seed=6, with_index=True))
    empty_doc = dict(samples[0], doc_lengths=np.array([0, *samples[0]["doc_lengths"], 0], np.int32))
    padding_sample = [s for s in samples if s["is_padding"]]
    assert padding_sample and any(sum(s["doc_lengths"]) < SEQ_LEN for s in samples)
    for batch in (samples[:16], samples[16:40], [empty_doc, *samples[-5:]], padding_sample):
        got = collate(batch, flatten=True)
        want = reference_collate(batch)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key].reshape(-1).numpy(), value, err_msg=key)
        assert got["max_seqlen"] == int(np.diff(want["cu_seqlens"]).max())


def test_collate_names_the_sample_whose_documents_overflow_its_row(prose_shards: Path) -> None:
    samples = list(ShardStream(prose_shards, seed=1))[:3]
    samples[1] = dict(samples[1], doc_lengths=np.array([SEQ_LEN, 1], np.int32))
    with pytest.raises(ValueError, match=f"sample 1 of the batch: doc_lengths \\[{SEQ_LEN}, 1\\]"):
        collate(samples)


def test_default_loader_ships_compact_batches_that_expand_to_the_full_layout(prose_shards: Path) -> None:
    """Workers send int32 ids and boundaries; to_device rebuilds exactly the full layout."""
    from packing.torch import to_device

    kw = {"rank": 1, "world_size": 3, "seed": 9, "with_index": True}
    reference = list(ShardStream(prose_shards, **kw))
    loader = StreamLoader(ShardStream(prose_shards, **kw), batch_size=8, num_workers=2)
    seen = 0
    for batch in loader:
        assert "labels" not in batch and batch["input_ids"].dtype == torch.int32
        with pytest.raises(KeyError, match="to_device"):
            batch["labels"]  # says where the labels are
        full = to_device(collate(reference[seen : seen + 8]), "cpu")
        expanded = to_device(batch, "cpu")
        assert_same_batch(expanded, full)
        seen += len(batch["sample_id"])
    assert seen == len(reference) and any(s["is_padding"] for s in reference)


@pytest.mark.parametrize("inline_bytes", [None, 0])
def test_full_layout_crosses_from_workers_as_one_storage(
    prose_shards: Path, monkeypatch: pytest.MonkeyPatch, inline_bytes: int | None
) -> None:
    """Ids, labels, positions and boundaries arrive as views of one storage: inline, or shared memory."""
    import packing.torch

    if inline_bytes is not None:  # the workers are forked from here and see the same limit
        monkeypatch.setattr(packing.torch, "INLINE_BYTES", inline_bytes)
    kw = {"rank": 0, "world_size": 2, "seed": 2, "with_index": True}
    reference = list(ShardStream(prose_shards, **kw))
    loader = StreamLoader(
        ShardStream(prose_shards, **kw),
        batch_size=16,
        num_workers=2,
        compact=False,
        multiprocessing_context="fork",
    )
    for i, batch in enumerate(loader):
        expected = collate(reference[16 * i : 16 * i + 16])
        assert_same_batch(batch, expected)
        storages = {batch[k].untyped_storage().data_ptr() for k in ("input_ids", "labels", "cu_seqlens")}
        assert len(storages) == 1
        assert batch["input_ids"].is_shared() == (inline_bytes == 0)
    assert 16 * i < len(reference) <= 16 * (i + 1)


def test_compact_loader_with_workers_matches_the_in_process_batches(prose_shards: Path) -> None:
    from packing.torch import to_device

    def batches(num_workers: int) -> list[dict]:
        stream = ShardStream(prose_shards, rank=0, world_size=2, seed=2, with_index=True)
        return [
            to_device(b, "cpu")
            for b in StreamLoader(stream, batch_size=16, num_workers=num_workers, compact=True)
        ]

    inline, workers = batches(0), batches(2)
    assert len(inline) == len(workers)
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["position_ids"], b["position_ids"])
        assert torch.equal(a["is_padding"], b["is_padding"])
