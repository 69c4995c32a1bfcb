"""ShardStream on real shard folders (real tokenizer, real packer, real Arrow files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from packing.build import PackOptions, build_shards
from packing.format import INDEX_FILE, ShardFormatError, read_index
from packing.stream import ShardStream, cu_seqlens_from_lengths, position_ids_from_lengths
from tokenization import load_tokenizer

SEQ_LEN = 64


def build_folder(texts: list[str], tokenizer_spec: str, out: Path, seq_len: int, rows_per_shard: int) -> Path:
    """A finished shard folder made by the project's own tokenizer loader, packer and writer."""
    tok = load_tokenizer(
        tokenizer_spec, eos_token="</s>" if not tokenizer_spec.startswith("cl100k") else None
    )
    eos = tok.eos_id if tok.eos_id is not None else 0
    options = PackOptions(seq_len=seq_len, eos_id=eos, max_shard_bytes=seq_len * 4 * rows_per_shard)
    build_shards(texts, tok, out, options)
    return out


def read_rows(folder: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every row of a folder in index order, read with plain pyarrow (independently of the stream)."""
    index = read_index(folder)
    ids, lengths = [], []
    for shard in index["shards"]:
        with pa.memory_map(str(folder / shard["path"])) as f:
            table = pa.ipc.open_file(f).read_all()
        ids.append(np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)))
        lengths.extend(np.asarray(x, dtype=np.int32) for x in table.column("doc_lengths").to_pylist())
    return np.concatenate(ids), lengths


@pytest.fixture(scope="session")
def prose_shards(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_path: Path, prose_texts: list[str]
) -> Path:
    """About 1,700 rows of 64 tokens in about 55 shards of at most 32 rows.

    The other stream test modules reuse this fixture; the folder is built once per session.
    """
    out = tmp_path_factory.getbasetemp() / "stream-prose" / "shards"
    if (out / INDEX_FILE).exists():
        return out
    return build_folder(prose_texts, str(bpe_tokenizer_path), out, SEQ_LEN, 32)


@pytest.fixture(scope="session")
def prose_rows(prose_shards: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    return read_rows(prose_shards)


def ids_of(samples) -> list[int]:
    """Sample ids, leaving out the repeats that pad a rank to an even share (``is_padding``)."""
    return [int(s["sample_id"]) for s in samples if not s.get("is_padding", False)]


def lockstep(streams: list[ShardStream], steps: int | None = None) -> list[list[int]]:
    """Advance every rank one sample per step, as data-parallel trainers do; returns sample ids per rank."""
    iters = [iter(s) for s in streams]
    out: list[list[int]] = [[] for _ in streams]
    step = 0
    while steps is None or step < steps:
        got = [next(it, None) for it in iters]
        if all(g is None for g in got):
            break
        for r, g in enumerate(got):
            if g is not None:
                out[r].append(int(g["sample_id"]))
        step += 1
    return out


def ranks(folder, world_size: int, **kw) -> list[ShardStream]:
    return [
        ShardStream(folder, rank=r, world_size=world_size, with_index=True, **kw) for r in range(world_size)
    ]


# -- reading --------------------------------------------------------------------------------------


def test_samples_are_the_rows_of_the_shards(prose_shards: Path, prose_rows) -> None:
    ids, lengths = prose_rows
    stream = ShardStream(prose_shards, seed=3, with_index=True)
    assert stream.samples_per_epoch == len(ids) == len(stream)
    seen = 0
    for sample in stream:
        k = int(sample["sample_id"])
        np.testing.assert_array_equal(sample["input_ids"], ids[k])
        np.testing.assert_array_equal(sample["doc_lengths"], lengths[k])
        assert sample["input_ids"].dtype == np.uint32 and not sample["input_ids"].flags.writeable  # a view
        seen += 1
    assert seen == len(ids)


def test_input_ids_are_zero_copy_views_of_the_mapped_file(prose_shards: Path) -> None:
    sample = next(iter(ShardStream(prose_shards, shuffle=False)))
    base = sample["input_ids"]
    while base.base is not None and isinstance(base.base, np.ndarray):
        base = base.base
    assert not base.flags.owndata  # memory belongs to the mapping, not to a numpy copy


def test_order_is_a_seeded_permutation_per_epoch(prose_shards: Path) -> None:
    first = ShardStream(prose_shards, seed=1, with_index=True)
    epoch0, epoch1 = ids_of(first), ids_of(first)
    assert first.epoch == 2
    again = ShardStream(prose_shards, seed=1, with_index=True)
    assert ids_of(again) == epoch0
    other = ShardStream(prose_shards, seed=2, with_index=True)
    assert ids_of(other) != epoch0
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0) == list(range(len(epoch0)))
    in_order = ShardStream(prose_shards, shuffle=False, with_index=True)
    assert ids_of(in_order) == list(range(len(epoch0)))


def test_shuffle_block_keeps_reads_inside_a_window_of_shards(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, seed=5, shuffle_block=64, with_index=True)
    order = ids_of(stream)
    assert sorted(order) == list(range(stream.samples_per_epoch))
    cum = stream.sources[0].cum_rows
    shards = np.searchsorted(cum, order, side="right") - 1
    # each block of 64 samples comes from the few shards laid out there (rows <= 32 per shard)
    for lo in range(0, len(order), 64):
        assert len(set(shards[lo : lo + 64].tolist())) <= 64 // 16 + 2
    assert order != sorted(order)


def test_position_ids_and_cu_seqlens(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, seed=0, position_ids=True, cu_seqlens=True)
    checked = 0
    for sample in stream:
        lengths = sample["doc_lengths"].tolist()
        used = sum(lengths)
        expected_pos = [p for n in lengths for p in range(n)] + list(range(SEQ_LEN - used))
        assert sample["position_ids"].tolist() == expected_pos
        bounds = [0]
        for n in [*lengths, SEQ_LEN - used]:
            if n:
                bounds.append(bounds[-1] + n)
        assert sample["cu_seqlens"].tolist() == bounds
        assert sample["cu_seqlens"].dtype == np.int32
        checked += len(lengths) > 1
    assert checked > 10  # rows holding several documents were exercised


def test_length_helpers_refuse_rows_that_overflow() -> None:
    assert cu_seqlens_from_lengths(np.array([3, 0, 2], np.int32), 8).tolist() == [0, 3, 5, 8]
    assert position_ids_from_lengths(np.array([2, 3], np.int32), 5).tolist() == [0, 1, 0, 1, 2]
    with pytest.raises(ValueError, match="do not fit"):
        position_ids_from_lengths(np.array([5, 4], np.int32), 8)


# -- exactly once across ranks and workers ---------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exactly_once_per_epoch(prose_shards: Path, world_size: int, num_workers: int) -> None:
    streams = ranks(prose_shards, world_size, seed=11)
    n = streams[0].samples_per_epoch
    per_rank = []
    for stream in streams:
        if num_workers == 0:
            got = ids_of(stream)
        else:
            got = []
            for w in range(num_workers):
                got += ids_of(stream.samples(worker=w, num_workers=num_workers, block_size=4))
        per_rank.append(got)
    everything = [x for r in per_rank for x in r]
    assert len(everything) == n and sorted(everything) == list(range(n))
    sizes = [len(r) for r in per_rank]
    assert max(sizes) - min(sizes) <= 1
    # with the padding every rank has the same count, which is what len() promises
    share = -(-n // world_size)
    assert [len(ShardStream(prose_shards, rank=r, world_size=world_size)) for r in range(world_size)] == [
        share
    ] * world_size
    assert sum(
        1 for r in range(world_size) for _ in ShardStream(prose_shards, rank=r, world_size=world_size)
    ) == (share * world_size)


def test_workers_split_a_rank_in_whole_batches_that_interleave_back_in_order(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, rank=1, world_size=3, seed=4, with_index=True)
    whole = ids_of(stream.samples())
    parts = [ids_of(stream.samples(worker=w, num_workers=3, block_size=5)) for w in range(3)]
    batches = [[p[i : i + 5] for i in range(0, len(p), 5)] for p in parts]
    interleaved = [x for k in range(max(map(len, batches))) for b in batches if k < len(b) for x in b[k]]
    assert interleaved == whole


def test_drop_last_gives_every_rank_the_same_count(prose_shards: Path) -> None:
    streams = ranks(prose_shards, 8, seed=2, drop_last=True)
    n = streams[0].samples_per_epoch
    per_rank = lockstep(streams)
    assert {len(r) for r in per_rank} == {n // 8}
    assert len({x for r in per_rank for x in r}) == n // 8 * 8
    assert all(s.epoch == 1 and s.consumed == 0 for s in streams)


# -- resume ---------------------------------------------------------------------------------------


class Job:
    """Data-parallel ranks stepping together across epochs: each step every rank asks for one sample."""

    def __init__(self, streams: list[ShardStream]) -> None:
        self.streams = streams
        self.iters = [iter(s) for s in streams]

    def step(self) -> list[int | None]:
        got = [next(it, None) for it in self.iters]
        if all(g is None for g in got):  # the epoch is over on every rank: the trainer starts the next
            self.iters = [iter(s) for s in self.streams]
            got = [next(it, None) for it in self.iters]
        return [None if g is None else int(g["sample_id"]) for g in got]


def test_resume_at_random_points_equals_an_uninterrupted_run(prose_shards: Path) -> None:
    world_size, seed = 3, 9
    n = ShardStream(prose_shards).samples_per_epoch
    total = 2 * -(-n // world_size) + 40  # over two epoch boundaries (n is not a multiple of 3)
    assert n % world_size
    job = Job(ranks(prose_shards, world_size, seed=seed))
    reference = [job.step() for _ in range(total)]

    cuts = sorted(np.random.default_rng(1234).choice(np.arange(1, total), size=6, replace=False).tolist())
    job = Job(ranks(prose_shards, world_size, seed=seed))
    resumed: list[list[int | None]] = []
    for lo, hi in zip([0, *cuts], [*cuts, total], strict=True):
        resumed += [job.step() for _ in range(hi - lo)]
        states = [s.state_dict() for s in job.streams]
        assert all(st == states[0] for st in states)  # every rank holds the same global progress
        state = json.loads(json.dumps(states[-1]))  # as a checkpoint stores it
        fresh = ranks(prose_shards, world_size, seed=seed)
        for s in fresh:
            s.load_state_dict(state)
        job = Job(fresh)
    assert resumed == reference


def test_elastic_resume_from_four_ranks_to_three(prose_shards: Path) -> None:
    four = ranks(prose_shards, 4, seed=21)
    n = four[0].samples_per_epoch
    before = lockstep(four, steps=97)
    state = four[3].state_dict()
    assert state["consumed"] == 4 * 97
    three = ranks(prose_shards, 3, seed=21)
    for s in three:
        s.load_state_dict(state)
    after = lockstep(three)
    sizes = [len(a) for a in after]
    assert max(sizes) - min(sizes) <= 1
    everything = [x for r in before + after for x in r]
    assert len(everything) == n and sorted(everything) == list(range(n))
    # the three ranks continue the same global order the four were dealt from
    order = ids_of(ShardStream(prose_shards, seed=21, with_index=True))
    for r in range(3):
        assert after[r] == order[4 * 97 + r :: 3]


def test_state_is_checked_against_the_stream(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, seed=1)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="seed"):
        ShardStream(prose_shards, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="not a longtrove.stream"):
        stream.load_state_dict({"epoch": 0})


def test_partial_iteration_then_reiterating_continues(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, seed=7, with_index=True)
    whole = ids_of(ShardStream(prose_shards, seed=7, with_index=True))
    it = iter(stream)
    head = [int(next(it)["sample_id"]) for _ in range(10)]
    assert stream.consumed == 10
    tail = ids_of(stream)
    assert head + tail == whole


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture()
def shard_copy(prose_shards: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(prose_shards, folder)
    return folder


def first_shard(folder: Path) -> Path:
    return folder / read_index(folder)["shards"][0]["path"]


def test_corrupted_shard_is_named(shard_copy: Path) -> None:
    path = first_shard(shard_copy)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=rf"{path.name}.*sha256.*corrupted"):
        list(ShardStream(shard_copy, shuffle=False))


def test_truncated_shard_is_named_even_without_checksums(shard_copy: Path) -> None:
    path = first_shard(shard_copy)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ShardFormatError, match=rf"{path.name}: not a readable Arrow IPC file"):
        list(ShardStream(shard_copy, shuffle=False, verify_checksums=False))
    with pytest.raises(ShardFormatError, match=rf"{path.name}.*sha256"):
        list(ShardStream(shard_copy, shuffle=False))


def test_missing_shard_is_named(shard_copy: Path) -> None:
    path = first_shard(shard_copy)
    path.unlink()
    with pytest.raises(ShardFormatError, match=rf"{path.name}: listed in .*index.json but missing"):
        list(ShardStream(shard_copy, shuffle=False))


def test_row_count_differing_from_the_index_is_named(shard_copy: Path) -> None:
    index_path = shard_copy / INDEX_FILE
    index = json.loads(index_path.read_text())
    index["shards"][0]["rows"] += 1
    index_path.write_text(json.dumps(index))
    name = index["shards"][0]["path"]
    with pytest.raises(ShardFormatError, match=rf"{name}: holds \d+ rows but .*index.json lists"):
        list(ShardStream(shard_copy, shuffle=False, verify_checksums=False))


@pytest.mark.parametrize("bad", ["../elsewhere.arrow", "/etc/passwd"])
def test_index_paths_escaping_the_folder_are_refused(shard_copy: Path, bad: str) -> None:
    index_path = shard_copy / INDEX_FILE
    index = json.loads(index_path.read_text())
    index["shards"][1]["path"] = bad
    index_path.write_text(json.dumps(index))
    with pytest.raises(ShardFormatError, match=r"index\.json.*shards\[1\].*relative"):
        ShardStream(shard_copy)


def test_bad_arguments_are_refused(prose_shards: Path) -> None:
    with pytest.raises(ValueError, match="rank"):
        ShardStream(prose_shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match="weight"):
        ShardStream([(prose_shards, 0.0)])
    with pytest.raises(ShardFormatError, match="no index.json"):
        ShardStream(prose_shards.parent)


def test_views_stay_valid_after_mapped_pages_are_released(prose_shards: Path, prose_rows) -> None:
    ids, _ = prose_rows
    stream = ShardStream(prose_shards, seed=12, with_index=True, release_bytes=1)  # drop pages after each
    kept = list(stream)  # views from before many releases
    assert len(kept) == len(ids)
    for sample in kept:
        np.testing.assert_array_equal(sample["input_ids"], ids[int(sample["sample_id"])])
