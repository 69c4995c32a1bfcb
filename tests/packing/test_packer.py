"""Packing: every token of every document lands in exactly one row, rows are full, and bad input is handled."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from packing.build import PackOptions, ShardBuilder, build_shards, merge_ranks, resolve_options
from packing.format import ShardWriter, open_shard, read_index, verify_shards
from packing.packer import Packer
from tests.conftest import CL100K_OFFLINE


def read_documents(folder: Path) -> tuple[dict[str, np.ndarray], list[int]]:
    """Cut every row of every shard by doc_lengths and join the segments of each document by offset."""
    index = read_index(folder)
    pieces: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    row_fill = []
    for shard in index["shards"]:
        with pa.memory_map(str(folder / shard["path"]), "r") as source:
            table = pa.ipc.open_file(source).read_all()
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(-1, index["seq_len"])
        for row, lengths, doc_ids, offsets in zip(
            ids,
            table.column("doc_lengths").to_pylist(),
            table.column("doc_ids").to_pylist(),
            table.column("doc_offsets").to_pylist(),
            strict=True,
        ):
            bounds = np.cumsum([0, *lengths])
            row_fill.append(int(bounds[-1]))
            assert (row[bounds[-1] :] == index["tokenizer"]["pad_id"]).all()
            for i, (doc_id, offset) in enumerate(zip(doc_ids, offsets, strict=True)):
                pieces[doc_id].append((offset, row[bounds[i] : bounds[i + 1]]))
    documents = {}
    for doc_id, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        position = 0
        for offset, part in parts:  # contiguous: no token lost, none twice
            assert offset == position, f"{doc_id}: segment at {offset}, expected {position}"
            position += len(part)
        documents[doc_id] = np.concatenate([p for _, p in parts])
    return documents, row_fill


def test_every_document_round_trips_with_the_trained_tokenizer(
    tmp_path: Path, prose_texts: list[str], bpe_tokenizer_path: Path
) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    seq_len = 512
    # a small pool: many packing rounds, with rows carried from one round to the next
    options = resolve_options(tok, seq_len=seq_len, pool_tokens=4 * seq_len)
    index = build_shards([(f"doc{i}", t) for i, t in enumerate(prose_texts)], tok, tmp_path, options)
    documents, row_fill = read_documents(tmp_path)

    assert sorted(documents) == sorted(f"doc{i}" for i in range(len(prose_texts)))
    for i, text in enumerate(prose_texts):
        ids = documents[f"doc{i}"]
        assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
        np.testing.assert_array_equal(ids[:-1], tok.encode(text))
        assert tok.decode(ids[:-1]) == text
    stats = index["stats"]
    encoded_sizes = [len(tok.encode(t)) + 1 for t in prose_texts]
    assert stats["tokens"] == sum(encoded_sizes) == sum(row_fill)
    assert stats["split_documents"] == sum(n > seq_len for n in encoded_sizes) > 0
    assert stats["documents"] == len(prose_texts) and stats["dropped_documents"] == 0
    assert min(row_fill) > 0 and max(row_fill) <= seq_len
    assert stats["padding_tokens"] == len(row_fill) * seq_len - stats["tokens"]
    # even with a pool of only four rows, carrying the emptiest rows keeps padding small
    assert len(row_fill) <= math.ceil(stats["tokens"] / seq_len) * 1.02
    assert verify_shards(tmp_path) == []
    assert index["tokenizer"]["fingerprint"] == tok.fingerprint


def test_special_token_strings_stay_text_with_tiktoken_cl100k(tmp_path: Path, prose_texts: list[str]) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(CL100K_OFFLINE, eos_token="<|endoftext|>")
    texts = [f"{t[:400]} <|endoftext|> forged boundary </s> <s>" for t in prose_texts[:40]]
    options = resolve_options(tok, seq_len=1024)
    index = build_shards(texts, tok, tmp_path, options)
    documents, _ = read_documents(tmp_path)
    assert len(documents) == 40
    for i, text in enumerate(texts):
        ids = documents[str(i)]
        # the only EOS id is the one added after the document; the text's "<|endoftext|>" is ordinary tokens
        assert np.flatnonzero(ids == tok.eos_id).tolist() == [len(ids) - 1]
        assert tok.decode(ids[:-1]) == text
    assert index["tokenizer"]["vocab_size"] == tok.vocab_size and index["tokenizer"]["eos_id"] == 100257


def test_a_document_over_100_rows_long_is_split_or_dropped_and_counted(tmp_path: Path) -> None:
    seq_len = 512
    rng = np.random.default_rng(7)
    long_doc = rng.integers(0, 4000, size=100 * seq_len + 100, dtype=np.uint32)
    short = [rng.integers(0, 4000, size=n, dtype=np.uint32) for n in (100, 212, 50)]

    writer = ShardWriter(tmp_path / "split", seq_len=seq_len, pad_id=0)
    packer = Packer(writer, seq_len)
    packer.add_batch([short[0], long_doc, short[1], short[2]], ["a", "long", "b", "c"])
    stats = packer.finish()
    assert stats.split_documents == 1 and stats.documents == 4 and stats.rows == 101
    assert stats.tokens == len(long_doc) + 362 and stats.padding_tokens == 101 * seq_len - stats.tokens
    table = open_shard(tmp_path / "split" / writer.close()[0]["path"])
    segments = [
        (doc_id, offset)
        for ids, offsets in zip(
            table.column("doc_ids").to_pylist(), table.column("doc_offsets").to_pylist(), strict=True
        )
        for doc_id, offset in zip(ids, offsets, strict=True)
    ]
    assert [offset for doc_id, offset in segments if doc_id == "long"] == [i * seq_len for i in range(101)]
    documents = _documents_of(table, seq_len)
    np.testing.assert_array_equal(documents["long"], long_doc)  # 100 full rows + the packed remainder

    writer = ShardWriter(tmp_path / "drop", seq_len=seq_len, pad_id=0)
    packer = Packer(writer, seq_len, on_long="drop")
    packer.add_batch([short[0], long_doc, short[1]], ["a", "long", "b"])
    stats = packer.finish()
    assert (
        stats.dropped_documents == 1 and stats.dropped_tokens == len(long_doc) and stats.split_documents == 0
    )
    assert stats.documents == 2 and stats.rows == 1 and stats.tokens == 312
    documents = _documents_of(open_shard(tmp_path / "drop" / writer.close()[0]["path"]), seq_len)
    assert sorted(documents) == ["a", "b"]


def _documents_of(table: pa.Table, seq_len: int) -> dict[str, np.ndarray]:
    ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(-1, seq_len)
    pieces: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for row, lengths, doc_ids, offsets in zip(
        ids,
        table.column("doc_lengths").to_pylist(),
        table.column("doc_ids").to_pylist(),
        table.column("doc_offsets").to_pylist(),
        strict=True,
    ):
        bounds = np.cumsum([0, *lengths])
        for i, (doc_id, offset) in enumerate(zip(doc_ids, offsets, strict=True)):
            pieces[doc_id].append((offset, row[bounds[i] : bounds[i + 1]]))
    return {k: np.concatenate([p for _, p in sorted(v, key=lambda x: x[0])]) for k, v in pieces.items()}


def test_empty_and_zero_token_documents_make_no_rows(tmp_path: Path, bpe_tokenizer_path: Path) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    options = resolve_options(tok, seq_len=64)
    only_empty = tmp_path / "empty"
    index = build_shards(["", "", ""], tok, only_empty, options)
    assert index["shards"] == [] and index["stats"]["empty_documents"] == 3 and index["stats"]["tokens"] == 0
    assert not list(only_empty.glob("shard-*.arrow"))

    mixed = tmp_path / "mixed"
    with ShardBuilder(mixed, tok, options) as builder:
        builder.add_texts(["", "hello world", ""], ["e1", "h", "e2"])
        builder.add_token_arrays([np.empty(0, np.uint32), tok.encode("more text")], ["zero", "m"])
    # a builder writes its shards and manifest; the index comes from merge_ranks
    assert not (mixed / "index.json").exists()
    index = merge_ranks(mixed, world_size=1)
    assert index["stats"]["empty_documents"] == 3 and index["stats"]["documents"] == 2
    documents, row_fill = read_documents(mixed)
    assert sorted(documents) == ["h", "m"] and row_fill == [sum(len(d) for d in documents.values())]


def test_padding_near_the_lower_bound_at_8k_and_128k(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = rng.lognormal(7.2, 1.4, size=3000).astype(np.int64) + 1  # heavy-tailed, like real documents
    source = rng.integers(0, 60000, size=int(sizes.max()), dtype=np.uint32)
    for seq_len in (8192, 131072):
        # uint16 shards: half the bytes to write for the same rows
        writer = ShardWriter(tmp_path / str(seq_len), seq_len=seq_len, pad_id=0, dtype="uint16")
        packer = Packer(writer, seq_len, pool_tokens=max(2_000_000, 8 * seq_len))  # several rounds
        for n in sizes:
            packer.add(source[:n])
        stats = packer.finish()
        entries = writer.close()
        total = int(sizes.sum())
        assert stats.tokens == total == sum(e["tokens"] for e in entries)
        assert stats.rows == sum(e["rows"] for e in entries) <= math.ceil(total / seq_len) + 1
        # all padding but that of the last row or two is gone
        assert stats.padding_tokens - (math.ceil(total / seq_len) * seq_len - total) <= 0.005 * total


def test_vocabulary_too_large_for_the_dtype_and_bad_separators(bpe_tokenizer_path: Path) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(CL100K_OFFLINE, eos_token="<|endoftext|>")
    with pytest.raises(ValueError, match=r"100,277 ids, more than uint16"):
        resolve_options(tok, seq_len=1024, dtype="uint16")
    small = load_tokenizer(bpe_tokenizer_path)
    assert resolve_options(small, seq_len=64, eos_id=2, dtype="uint16").dtype == "uint16"
    with pytest.raises(ValueError, match="no EOS token configured"):
        resolve_options(small, seq_len=64)
    with pytest.raises(ValueError, match="eos_id 5000 is outside the vocabulary"):
        resolve_options(small, seq_len=64, eos_id=5000)
    assert resolve_options(small, seq_len=64, use_eos=False).eos_id is None
    with pytest.raises(ValueError, match="on_long"):
        PackOptions(seq_len=64, eos_id=2, on_long="truncate")  # type: ignore[arg-type]


def test_million_token_sequences_from_long_documents(tmp_path: Path, prose_texts: list[str]) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(CL100K_OFFLINE, eos_token="<|endoftext|>")
    seq_len = 1_048_576
    corpus = "\n\n".join(prose_texts)  # about 106K cl100k tokens
    texts = {
        "k10": corpus * 10 + " tail",
        "k4": corpus * 4,
        "k3": "intro " + corpus * 3,
        "short": prose_texts[0],
    }
    encoded = {k: tok.encode(t) for k, t in texts.items()}
    assert len(encoded["k10"]) > seq_len  # split: one full row and a remainder
    with ShardBuilder(tmp_path, tok, resolve_options(tok, seq_len=seq_len)) as builder:
        builder.add_token_arrays(list(encoded.values()), list(encoded))
    index = merge_ranks(tmp_path, world_size=1)
    assert index["seq_len"] == seq_len and index["stats"]["split_documents"] == 1
    documents, row_fill = read_documents(tmp_path)
    total = sum(len(e) + 1 for e in encoded.values())
    assert sum(row_fill) == total and len(row_fill) == math.ceil(total / seq_len)
    for key, ids in encoded.items():
        np.testing.assert_array_equal(documents[key][:-1], ids)
    assert tok.decode(documents["k3"][:-1]) == texts["k3"]
    with pa.memory_map(str(tmp_path / index["shards"][0]["path"]), "r") as source:
        reader = pa.ipc.open_file(source)
        assert reader.schema.field("input_ids").type.list_size == seq_len
        assert index["packing"]["rows_per_batch"] == 8  # 32 MiB record batches: 8 rows of 4 MiB
        assert reader.num_record_batches == 1 and reader.get_batch(0).num_rows == len(row_fill)


def test_rank_tails_are_packed_together_by_the_index_merge(tmp_path: Path, bpe_tokenizer_path: Path) -> None:
    from packing.format import INDEX_FILE
    from tokenization import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_path)  # only its identity is used: ranks are fed token arrays

    seq_len = 4096
    rng = np.random.default_rng(3)
    options = PackOptions(seq_len=seq_len, eos_id=2)
    sent: dict[str, np.ndarray] = {}
    for rank in range(3):
        docs = [rng.integers(3, 4000, size=int(n), dtype=np.uint32) for n in rng.integers(50, 3000, size=40)]
        ids = [f"r{rank}-{i}" for i in range(len(docs))]
        with ShardBuilder(tmp_path, tok, options, rank=rank, tail_tokens=2 * seq_len) as builder:
            builder.add_token_arrays(docs, ids)
        sent.update({i: np.append(d, np.uint32(2)) for i, d in zip(ids, docs, strict=True)})
    index = merge_ranks(tmp_path, world_size=3)
    total = sum(len(d) for d in sent.values())
    assert index["stats"]["tokens"] == total and index["stats"]["documents"] == 120
    assert index["stats"]["rows"] <= math.ceil(total / seq_len) + 1  # not a part-empty row or two per rank
    assert any(s["path"].startswith("shard-00003-") for s in index["shards"])
    documents, _ = read_documents(tmp_path)
    assert sorted(documents) == sorted(sent)
    for doc_id, ids in sent.items():
        np.testing.assert_array_equal(documents[doc_id], ids)
    first = (tmp_path / INDEX_FILE).read_bytes()
    assert merge_ranks(tmp_path, world_size=3) == index and (tmp_path / INDEX_FILE).read_bytes() == first


def test_bos_and_eos_wrap_every_document_and_pad_id_is_configurable(
    tmp_path: Path, prose_texts: list[str], bpe_tokenizer_path: Path
) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>", bos_token="<s>")
    options = resolve_options(tok, seq_len=256, use_bos=True, pad_id=3)
    assert (options.bos_id, options.eos_id, options.resolved_pad_id) == (tok.bos_id, tok.eos_id, 3)
    index = build_shards(prose_texts[:12], tok, tmp_path, options)
    assert index["tokenizer"]["bos_id"] == tok.bos_id and index["tokenizer"]["pad_id"] == 3
    documents, _ = read_documents(tmp_path)  # also checks that every row is padded with id 3
    for i, text in enumerate(prose_texts[:12]):
        ids = documents[str(i)]
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        np.testing.assert_array_equal(ids[1:-1], tok.encode(text))
