"""The Megatron export read back by megatron-core's own IndexedDataset and GPTDataset (CPU)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from packing.format import ShardFormatError, read_index
from packing.megatron_export import export_megatron
from tests.packing import test_stream as shared

pytest.importorskip("torch")
indexed_dataset = pytest.importorskip("megatron.core.datasets.indexed_dataset")

prose_shards = shared.prose_shards
prose_rows = shared.prose_rows
SEQ_LEN = shared.SEQ_LEN


def documents_of(folder: Path) -> dict[str, np.ndarray]:
    """Every source document rebuilt from the rows with plain pyarrow, pieces joined by offset."""
    import pyarrow as pa

    pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
    for shard in read_index(folder)["shards"]:
        with pa.memory_map(str(folder / shard["path"])) as f:
            table = pa.ipc.open_file(f).read_all()
        for ids, lengths, doc_ids, offsets in zip(
            table.column("input_ids").to_pylist(),
            table.column("doc_lengths").to_pylist(),
            table.column("doc_ids").to_pylist(),
            table.column("doc_offsets").to_pylist(),
            strict=True,
        ):
            start = 0
            for n, doc_id, offset in zip(lengths, doc_ids, offsets, strict=True):
                pieces.setdefault(doc_id, []).append((offset, np.asarray(ids[start : start + n])))
                start += n
    return {k: np.concatenate([p for _, p in sorted(v, key=lambda x: x[0])]) for k, v in pieces.items()}


def test_documents_export_holds_every_document_and_token_of_the_index(
    prose_shards: Path, tmp_path: Path
) -> None:
    index = read_index(prose_shards)
    assert index["stats"]["split_documents"] > 0  # the fixture really has documents cut across rows
    summary = export_megatron(prose_shards, tmp_path / "prose", mode="documents")
    dataset = indexed_dataset.IndexedDataset(str(tmp_path / "prose"))
    assert len(dataset) == index["stats"]["documents"] == summary.documents
    assert int(dataset.sequence_lengths.sum()) == index["stats"]["tokens"] == summary.tokens
    assert dataset.sequence_lengths.dtype == np.int32 and dataset[0].dtype == np.int32
    expected = sorted(tuple(d.tolist()) for d in documents_of(prose_shards).values())
    got = sorted(tuple(dataset[i].tolist()) for i in range(len(dataset)))
    assert got == expected
    assert not list(tmp_path.glob(".*tmp*"))  # nothing temporary left behind


def megatron_tokenizer(path: Path, entry: dict):
    """Our tokenizer behind Megatron's tokenizer interface (what GPTDataset consults: eod, pad, vocab)."""
    from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

    from tokenization import load_tokenizer

    class Ours(MegatronLegacyTokenizer):
        def __init__(self) -> None:
            super().__init__(str(path))
            self.tok = load_tokenizer(str(path), eos_token="</s>")

        def tokenize(self, text: str) -> np.ndarray:
            return self.tok.encode(text)

        def detokenize(self, ids: np.ndarray) -> str:
            return self.tok.decode(ids)

        @property
        def vocab(self):
            raise NotImplementedError

        @property
        def inv_vocab(self):
            raise NotImplementedError

        @property
        def vocab_size(self) -> int:
            return self.tok.vocab_size

        @property
        def eod(self) -> int:
            return entry["eos_id"]

        @property
        def pad(self) -> int:
            return -1

    tokenizer = Ours()
    assert tokenizer.vocab_size == entry["vocab_size"] and tokenizer.tok.eos_id == entry["eos_id"]
    return tokenizer


def test_packed_export_keeps_rows_as_megatron_samples(
    prose_shards: Path, prose_rows, tmp_path: Path, bpe_tokenizer_path: Path
) -> None:
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import Split

    ids, lengths = prose_rows
    export_megatron(prose_shards, tmp_path / "rows", mode="packed")
    dataset = indexed_dataset.IndexedDataset(str(tmp_path / "rows"))
    assert len(dataset) == len(ids)
    np.testing.assert_array_equal(np.stack([dataset[i] for i in range(len(dataset))]), ids.astype(np.int32))

    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=SEQ_LEN,
        blend=None,
        split="100,0,0",
        path_to_cache=str(tmp_path / "cache"),
        tokenizer=megatron_tokenizer(bpe_tokenizer_path, read_index(prose_shards)["tokenizer"]),
        reset_position_ids=True,
        reset_attention_mask=True,
        eod_mask_loss=True,
        create_attention_mask=False,
    )
    gpt = GPTDataset(
        dataset, str(tmp_path / "rows"), np.arange(len(dataset)), len(dataset) - 1, Split.train, config
    )
    row_of = {tuple(r.tolist()): i for i, r in enumerate(ids)}
    drawn: Counter = Counter()
    for i in range(len(gpt)):
        sample = gpt[i]
        tokens = sample["tokens"].numpy()
        row = row_of[tuple(tokens.tolist())]  # every Megatron sample is exactly one of our rows
        drawn[tuple(tokens.tolist())] += 1
        # positions restart after every EOD token our packer wrote between documents
        n = lengths[row]
        starts = np.cumsum(n)[:-1]
        positions = sample["position_ids"].numpy()
        assert all(positions[s] == 0 for s in starts if s < SEQ_LEN)
    assert len(gpt) == len(ids) - 1  # the last row only lends its first token as the final label
    assert not drawn - Counter(tuple(r.tolist()) for r in ids)  # each row drawn at most once


def test_mixture_command_prints_the_data_path_weights(prose_shards: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            "megatron",
            str(prose_shards),
            str(prose_shards),
            "--out",
            str(tmp_path / "mix"),
            "--weight",
            "3",
            "--weight",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    prefixes = [e["prefix"] for e in report["exports"]]
    assert report["data_path"] == f"3 {prefixes[0]} 1 {prefixes[1]}"
    for prefix in prefixes:
        assert indexed_dataset.IndexedDataset.exists(prefix)


def test_packed_export_without_eod_is_refused(prose_shards: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "no-eod"
    shutil.copytree(prose_shards, copy)
    index = json.loads((copy / "index.json").read_text())
    index["tokenizer"]["eos_id"] = None
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardFormatError, match="eos_id is null"):
        export_megatron(copy, tmp_path / "x", mode="packed")
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".x*"))
