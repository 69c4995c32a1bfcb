"""The shard format: what the writer puts on disk, what any Arrow reader gets back, and how bad folders fail."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from packing.format import (
    INDEX_FILE,
    ShardFormatError,
    ShardWriter,
    check_vocab_fits,
    open_shard,
    read_index,
    shard_name,
    verify_shards,
    write_index,
)

TOKENIZER = {
    "name": "t",
    "fingerprint": "ab" * 32,
    "vocab_size": 50000,
    "eos_id": 2,
    "bos_id": None,
    "pad_id": 2,
}


def _rows(seed: int, n_rows: int, seq_len: int) -> list[tuple[list[np.ndarray], list[str], list[int]]]:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_rows):
        room, segs, ids, offs = seq_len, [], [], []
        while room > 0 and len(segs) < 5:
            n = int(rng.integers(1, room + 1))
            segs.append(rng.integers(3, 50000, size=n, dtype=np.uint32))
            ids.append(f"doc-{r}-{len(segs)}")
            offs.append(int(rng.integers(0, 3)) * seq_len)
            room -= n
            if rng.random() < 0.3:
                break
        rows.append((segs, ids, offs))
    return rows


def _write(folder: Path, rows, seq_len: int, **kwargs) -> list[dict]:
    writer = ShardWriter(folder, seq_len=seq_len, pad_id=2, **kwargs)
    for segs, ids, offs in rows:
        writer.write_segments(segs, doc_ids=ids, doc_offsets=offs)
    return writer.close()


def _stats(rows, seq_len: int) -> dict:
    tokens = sum(len(s) for segs, _, _ in rows for s in segs)
    return {
        "documents": sum(o == 0 for _, _, offs in rows for o in offs),
        "tokens": tokens,
        "padding_tokens": len(rows) * seq_len - tokens,
        "split_documents": 0,
        "dropped_documents": 0,
    }


def test_rows_round_trip_through_memory_mapped_reader_with_padding_and_checksums(tmp_path: Path) -> None:
    seq_len = 64
    rows = _rows(0, 300, seq_len)
    # 64 tokens x 4 bytes = 256 bytes a row: 40 rows a shard at most, so several shards
    entries = _write(tmp_path, rows, seq_len, max_shard_bytes=40 * 256)
    assert [e["path"] for e in entries] == [shard_name(0, i) for i in range(len(entries))]
    assert len(entries) == 8 and sum(e["rows"] for e in entries) == 300
    assert all(e["rows"] <= 40 for e in entries)

    got = []
    for entry in entries:
        path = tmp_path / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        with pa.memory_map(str(path), "r") as source:
            table = pa.ipc.open_file(source).read_all()
        assert table.num_rows == entry["rows"]
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(-1, seq_len)
        lengths = table.column("doc_lengths").to_pylist()
        assert entry["tokens"] == sum(map(sum, lengths))
        for row, row_lengths, doc_ids, offsets in zip(
            ids,
            lengths,
            table.column("doc_ids").to_pylist(),
            table.column("doc_offsets").to_pylist(),
            strict=True,
        ):
            got.append((row, row_lengths, doc_ids, offsets))
    for (row, row_lengths, doc_ids, offsets), (segs, ids, offs) in zip(got, rows, strict=True):
        assert row_lengths == [len(s) for s in segs]
        assert doc_ids == ids and offsets == offs
        used = sum(row_lengths)
        np.testing.assert_array_equal(row[:used], np.concatenate(segs))
        assert (row[used:] == 2).all()


def test_memory_mapped_rows_are_zero_copy(tmp_path: Path) -> None:
    seq_len = 4096
    entries = _write(tmp_path, _rows(1, 50, seq_len), seq_len)
    path = tmp_path / entries[0]["path"]
    before = pa.total_allocated_bytes()
    with pa.memory_map(str(path), "r") as source:
        reader = pa.ipc.open_file(source)
        batch = reader.get_batch(0)
        row = batch.column("input_ids").values.to_numpy(zero_copy_only=True)[seq_len * 7 : seq_len * 8]
        assert row.dtype == np.uint32 and len(row) == seq_len
        assert pa.total_allocated_bytes() == before  # nothing was copied into Arrow's heap


def test_any_arrow_reader_opens_a_shard(tmp_path: Path) -> None:
    import datasets
    import polars as pl

    seq_len = 32
    rows = _rows(2, 20, seq_len)
    entries = _write(tmp_path, rows, seq_len)
    path = str(tmp_path / entries[0]["path"])

    # Dataset.from_file opens only the IPC *stream* format (datasets' own cache files); the Arrow builder
    # of load_dataset opens the file format that trainers memory-map, so that is the datasets route.
    ds = datasets.load_dataset("arrow", data_files=[path], split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 20
    assert ds[3]["doc_lengths"] == [len(s) for s in rows[3][0]]
    assert ds[3]["input_ids"][: len(rows[3][0][0])] == rows[3][0][0].tolist()

    frame = pl.scan_ipc(str(tmp_path / "shard-*.arrow")).collect()
    assert frame.height == 20
    assert frame["doc_ids"][5].to_list() == rows[5][1]
    assert frame["input_ids"][5].to_list()[: len(rows[5][0][0])] == rows[5][0][0].tolist()


def test_same_rows_give_byte_identical_shards(tmp_path: Path) -> None:
    rows = _rows(3, 100, 128)
    a = _write(tmp_path / "a", rows, 128)
    b = _write(tmp_path / "b", rows, 128)
    assert a == b
    assert (tmp_path / "a" / a[0]["path"]).read_bytes() == (tmp_path / "b" / b[0]["path"]).read_bytes()


def test_write_pads_a_short_row_and_rejects_overflow(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, seq_len=8, pad_id=7)
    writer.write(np.array([1, 2, 3], dtype=np.uint32), [2, 1], doc_ids=["a", "b"], doc_offsets=[0, 5])
    with pytest.raises(ValueError, match="seq_len 8"):
        writer.write(np.arange(9, dtype=np.uint32), [9])
    with pytest.raises(ValueError, match="more than seq_len"):
        writer.write_segments([np.arange(5, dtype=np.uint32), np.arange(4, dtype=np.uint32)])
    (entry,) = writer.close()
    table = open_shard(tmp_path / entry["path"])
    assert table.column("input_ids")[0].as_py() == [1, 2, 3, 7, 7, 7, 7, 7]
    assert entry["documents"] == 1  # "b" continues a document that started elsewhere


def test_index_round_trip_and_validation(tmp_path: Path) -> None:
    rows = _rows(4, 10, 16)
    entries = _write(tmp_path, rows, 16)
    write_index(tmp_path, tokenizer=TOKENIZER, seq_len=16, shards=entries, stats=_stats(rows, 16))
    index = read_index(tmp_path)
    assert index["format"] == "longtrove.shards" and index["version"] == 1
    assert index["shards"] == entries and index["dtype"] == "uint32" and index["seq_len"] == 16
    assert verify_shards(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]

    raw = json.loads((tmp_path / INDEX_FILE).read_text())
    for mutate, message in [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=9), "version 9"),
        (lambda d: d["shards"][0].update(path="../x.arrow"), r"'\.\./x\.arrow'"),
        (lambda d: d["shards"][0].update(path="/abs/x.arrow"), "relative"),
        (lambda d: d["shards"][0].update(sha256="zz"), r"shards\[0\]\.sha256"),
        (lambda d: d.pop("seq_len"), "'seq_len'"),
    ]:
        bad = json.loads(json.dumps(raw))
        mutate(bad)
        (tmp_path / INDEX_FILE).write_text(json.dumps(bad))
        with pytest.raises(ShardFormatError, match=message) as info:
            read_index(tmp_path)
        assert str(tmp_path / INDEX_FILE) in str(info.value)
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(ShardFormatError, match="not valid JSON"):
        read_index(tmp_path)
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(ShardFormatError, match="no index.json"):
        read_index(tmp_path)
    with pytest.raises(ShardFormatError, match="does not exist"):
        write_index(
            tmp_path,
            tokenizer=TOKENIZER,
            seq_len=16,
            shards=[{**entries[0], "path": "gone.arrow"}],
            stats=_stats(rows, 16),
        )


def test_verify_finds_a_flipped_byte_and_a_missing_shard(tmp_path: Path) -> None:
    rows = _rows(5, 60, 16)
    entries = _write(tmp_path, rows, 16, max_shard_bytes=20 * 64)
    write_index(tmp_path, tokenizer=TOKENIZER, seq_len=16, shards=entries, stats=_stats(rows, 16))
    first = tmp_path / entries[0]["path"]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    (tmp_path / entries[1]["path"]).unlink()
    problems = verify_shards(tmp_path)
    assert len(problems) == 2
    assert entries[0]["path"] in problems[0] and "sha256" in problems[0]
    assert entries[1]["path"] in problems[1] and "missing" in problems[1]


def test_a_killed_writer_leaves_no_file_that_looks_finished(tmp_path: Path) -> None:
    # rows of 4 KiB, batches of 10 rows, shards of 100 rows: two shards finish, the third is half written
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from packing.format import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, seq_len=1024, pad_id=0, max_shard_bytes=100 * 4096, batch_bytes=10 * 4096)
        for i in range(250):
            w.write_segments([np.full(1000, i, dtype=np.uint32)])
        os._exit(0)  # dies before close(): like a killed task
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[2])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[1:] == [shard_name(0, 0), shard_name(0, 1)]
    assert names[0].startswith(f".{shard_name(0, 2)}.tmp-")  # hidden, and named as unfinished
    for name in names[1:]:  # the shards that were renamed are whole Arrow files
        assert open_shard(tmp_path / name).num_rows == 100

    writer = ShardWriter(tmp_path / "b", seq_len=16, pad_id=0)
    writer.write_segments([np.arange(4, dtype=np.uint32)])
    writer._flush_batch()  # a batch is on disk under the temp name
    writer.abort()
    assert list((tmp_path / "b").iterdir()) == []


def test_uint16_shards_and_vocabularies_too_large_for_the_dtype(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, seq_len=8, pad_id=0, dtype="uint16")
    writer.write_segments([np.array([65535, 1], dtype=np.uint32)])
    (entry,) = writer.close()
    column = open_shard(tmp_path / entry["path"]).column("input_ids")
    assert column.type.value_type == pa.uint16() and column[0].as_py()[:2] == [65535, 1]
    check_vocab_fits(65536, "uint16")
    with pytest.raises(ValueError, match=r"100,261 ids, more than uint16"):
        check_vocab_fits(100261, "uint16", what="tokenizer cl100k")
    with pytest.raises(ValueError, match="more than uint32"):
        check_vocab_fits(2**32 + 1, "uint32")
    with pytest.raises(ValueError, match="pad_id 70000 does not fit uint16"):
        ShardWriter(tmp_path, seq_len=8, pad_id=70000, dtype="uint16")
