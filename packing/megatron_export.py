"""Shard folders to Megatron-LM's indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``).

Why: Megatron-Core trains from its own memory-mapped format (``megatron.core.datasets.indexed_dataset``);
re-tokenizing the text for it would lose our packing and our exact tokens. Two layouts:

- ``documents``: one Megatron sequence (and document) per source document, with exactly the tokens and
  documents that ``index.json`` counts. A document the packer split across rows is joined again, in
  offset order, so Megatron sees it whole and packs it its own way.
- ``packed``: one Megatron sequence per row of ours (``seq_len`` tokens, padding included). With
  Megatron's ``--seq-length`` equal to our ``seq_len``, every sample Megatron draws is one of our rows
  (plus the first token of the next row, for the last label). Document boundaries inside a row are the
  EOD tokens our packer put after every document, which is what ``--reset-position-ids`` and
  ``--reset-attention-mask`` look for.

The ``.idx`` layout (all little-endian): the 9-byte magic ``MMIDIDX\\0\\0``, version ``u64 = 1``, the
token dtype code ``u8`` (4 = int32, 8 = uint16), the number of sequences ``u64``, the number of document
indices ``u64`` (documents + 1), then ``int32`` sequence lengths, ``int64`` byte offsets of every sequence
in the ``.bin``, and ``int64`` document indices (sequence numbers where each document starts, then the
total). Both files are written to temporary names and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from packing.format import ShardFormatError, read_index

ExportMode = Literal["documents", "packed"]
INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


@dataclass(frozen=True)
class MegatronExport:
    """What one export wrote: the prefix Megatron's ``--data-path`` takes, and what it holds."""

    prefix: Path
    mode: ExportMode
    sequences: int
    documents: int
    tokens: int
    dtype: str


@dataclass(frozen=True)
class _Piece:
    """Where one segment of a split document sits: shard, record batch, flat token offset, length."""

    shard: int
    batch: int
    start: int
    length: int
    offset: int


def _record_batches(path: Path) -> Iterator[tuple[int, pa.RecordBatch]]:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for b in range(reader.num_record_batches):
            yield b, reader.get_batch(b)


def _row_tokens(batch: pa.RecordBatch, seq_len: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the used tokens of every row back to back, the segment lengths in order)."""
    ids = batch.column("input_ids").flatten().to_numpy(zero_copy_only=True).reshape(-1, seq_len)
    lengths_col = batch.column("doc_lengths")
    lengths = lengths_col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    counts = lengths_col.value_lengths().to_numpy(zero_copy_only=False)
    used = np.bincount(np.repeat(np.arange(len(ids)), counts), weights=lengths, minlength=len(ids))
    mask = np.arange(seq_len)[None, :] < used.astype(np.int64)[:, None]
    return ids[mask].astype(dtype, copy=False), lengths


def _split_document_ids(folder: Path, index: dict) -> pa.Array:
    """Ids of documents that the packer cut into pieces (some piece starts past offset 0)."""
    found = []
    for shard in index["shards"]:
        for _, batch in _record_batches(folder / shard["path"]):
            offsets = batch.column("doc_offsets").flatten()
            found.append(pc.filter(batch.column("doc_ids").flatten(), pc.greater(offsets, 0)))
    if not found:
        return pa.array([], pa.string())
    return pc.unique(pa.concat_arrays(found))


class _IndexedWriter:
    """Appends token arrays to ``PREFIX.bin`` and keeps the sequence lengths for ``PREFIX.idx``."""

    def __init__(self, prefix: Path, dtype: np.dtype) -> None:
        self.prefix = prefix
        self.dtype = dtype
        self.bin_tmp = prefix.with_name(f".{prefix.name}.bin.tmp-{os.getpid()}")
        self.idx_tmp = prefix.with_name(f".{prefix.name}.idx.tmp-{os.getpid()}")
        self._bin: BinaryIO = open(self.bin_tmp, "wb")  # noqa: SIM115 (closed in finish/abort)
        self._lengths: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.append(np.asarray(lengths, dtype=np.int64))

    def finish(self, document_starts: np.ndarray | None = None) -> int:
        """Write the index and rename both files into place; returns the number of sequences."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        if len(lengths) and lengths.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{self.prefix}: a sequence of {lengths.max()} tokens does not fit int32")
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1] * self.dtype.itemsize, out=pointers[1:])
        if document_starts is None:  # one document per sequence
            document_starts = np.arange(len(lengths) + 1, dtype=np.int64)
        with open(self.idx_tmp, "wb") as f:
            f.write(INDEX_MAGIC)
            f.write(struct.pack("<Q", INDEX_VERSION))
            f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(document_starts)))
            f.write(lengths.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(np.asarray(document_starts, dtype="<i8").tobytes())
        idx = self.prefix.with_name(self.prefix.name + ".idx")
        with contextlib.suppress(FileNotFoundError):  # an older export's index must not meet the new .bin
            idx.unlink()
        os.replace(self.bin_tmp, self.prefix.with_name(self.prefix.name + ".bin"))
        os.replace(self.idx_tmp, idx)  # last: Megatron needs both files, so the pair appears complete
        return len(lengths)

    def abort(self) -> None:
        self._bin.close()
        for tmp in (self.bin_tmp, self.idx_tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def megatron_dtype(index: dict, where: str) -> np.dtype:
    """uint16 stays uint16; uint32 ids become int32 (Megatron has no uint32), checked to fit."""
    if index["dtype"] == "uint16":
        return np.dtype(np.uint16)
    vocab = int(index["tokenizer"].get("vocab_size") or 0)
    if vocab > np.iinfo(np.int32).max:
        raise ShardFormatError(f"{where}: vocab_size {vocab} does not fit Megatron's int32 tokens")
    return np.dtype(np.int32)


def export_megatron(
    folder: str | os.PathLike[str], prefix: str | os.PathLike[str], *, mode: ExportMode = "documents"
) -> MegatronExport:
    """Write ``PREFIX.bin``/``PREFIX.idx`` from a finished local shard folder."""
    if mode not in ("documents", "packed"):
        raise ValueError(f"mode must be 'documents' or 'packed', got {mode!r}")
    folder = Path(folder)
    index = read_index(folder)
    where = str(folder / "index.json")
    dtype = megatron_dtype(index, where)
    seq_len = int(index["seq_len"])
    if mode == "packed" and index["tokenizer"].get("eos_id") is None:
        raise ShardFormatError(
            f"{where}: tokenizer.eos_id is null, so rows hold no EOD token between documents and Megatron "
            f"could not find their boundaries; export with --mode documents"
        )
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    writer = _IndexedWriter(prefix, dtype)
    try:
        if mode == "packed":
            tokens = 0
            for shard in index["shards"]:
                for _, batch in _record_batches(folder / shard["path"]):
                    ids = batch.column("input_ids").flatten().to_numpy(zero_copy_only=True)
                    writer.add(ids, np.full(batch.num_rows, seq_len, dtype=np.int64))
                    tokens += int(pc.sum(batch.column("doc_lengths").flatten()).as_py() or 0)
            sequences = writer.finish()
            return MegatronExport(prefix, mode, sequences, sequences, tokens, dtype.name)
        tokens = _write_documents(folder, index, writer, seq_len, dtype, where)
        sequences = writer.finish()
        return MegatronExport(prefix, mode, sequences, sequences, tokens, dtype.name)
    except BaseException:
        writer.abort()
        raise


def _write_documents(
    folder: Path, index: dict, writer: _IndexedWriter, seq_len: int, dtype: np.dtype, where: str
) -> int:
    """Whole documents first as they come, then every split document joined from its pieces."""
    split_ids = _split_document_ids(folder, index)
    pieces: dict[str, list[_Piece]] = {}
    tokens = 0
    for s, shard in enumerate(index["shards"]):
        for b, batch in _record_batches(folder / shard["path"]):
            flat, lengths = _row_tokens(batch, seq_len, dtype)
            tokens += int(lengths.sum())
            if len(split_ids) == 0:
                writer.add(flat, lengths)
                continue
            whole = ~np.asarray(pc.is_in(batch.column("doc_ids").flatten(), value_set=split_ids), dtype=bool)
            if whole.all():
                writer.add(flat, lengths)
                continue
            writer.add(flat[np.repeat(whole, lengths)], lengths[whole])
            starts = np.cumsum(lengths) - lengths
            part_ids = pc.filter(batch.column("doc_ids").flatten(), pa.array(~whole)).to_pylist()
            part_offsets = batch.column("doc_offsets").flatten().to_numpy(zero_copy_only=False)[~whole]
            for doc_id, start, length, offset in zip(
                part_ids,
                starts[~whole].tolist(),
                lengths[~whole].tolist(),
                part_offsets.tolist(),
                strict=True,
            ):
                pieces.setdefault(doc_id, []).append(_Piece(s, b, start, length, offset))
    _write_joined(folder, index, writer, pieces, seq_len, dtype, where)
    return tokens


def _write_joined(
    folder: Path,
    index: dict,
    writer: _IndexedWriter,
    pieces: dict[str, list[_Piece]],
    seq_len: int,
    dtype: np.dtype,
    where: str,
) -> None:
    """Join each split document's pieces in offset order; they must tile the document exactly."""
    cached: tuple[tuple[int, int], np.ndarray] | None = None
    for doc_id, parts in pieces.items():
        parts.sort(key=lambda p: p.offset)
        expected = 0
        joined = []
        for part in parts:
            if part.offset != expected:
                raise ShardFormatError(
                    f"{where}: document {doc_id!r} has a piece at token {part.offset} where {expected} was "
                    f"expected (duplicate or missing document ids); export with --mode packed"
                )
            key = (part.shard, part.batch)
            if cached is None or cached[0] != key:
                path = folder / index["shards"][part.shard]["path"]
                with pa.memory_map(str(path)) as source:
                    batch = pa.ipc.open_file(source).get_batch(part.batch)
                    cached = (key, _row_tokens(batch, seq_len, dtype)[0].copy())
            joined.append(cached[1][part.start : part.start + part.length])
            expected += part.length
        document = np.concatenate(joined)
        writer.add(document, np.array([len(document)], dtype=np.int64))


def data_path_string(exports: list[MegatronExport], weights: list[float]) -> str:
    """Megatron's ``--data-path`` value for a blend: ``W1 PREFIX1 W2 PREFIX2 ...``."""
    if len(weights) != len(exports):
        raise ValueError(f"{len(weights)} weights for {len(exports)} exports")
    return " ".join(f"{w:g} {e.prefix}" for w, e in zip(weights, exports, strict=True))


__all__ = ["ExportMode", "MegatronExport", "data_path_string", "export_megatron", "megatron_dtype"]
