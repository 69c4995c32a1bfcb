"""The shard format: packed token sequences in uncompressed Arrow IPC files plus one `index.json`.

Why this shape: Arrow IPC *file* format without compression memory-maps, so a trainer reads a row as a
zero-copy slice of the page cache; `fixed_size_list<uint32>[seq_len]` keeps every row at a known byte
offset inside its record batch; `index.json`, written last and atomically, is the only thing that says a
folder is finished. Any Arrow reader (pyarrow, datasets, polars, duckdb) can open the shards without
this project.

Columns of a shard (one row per packed sequence):

- ``input_ids``   fixed_size_list<uint32>[seq_len] — documents back to back, then ``pad_id``
- ``doc_lengths`` list<int32> — length of each document segment in the row, in order
- ``doc_ids``     list<string> — the source document id of each segment (provenance)
- ``doc_offsets`` list<int64> — token offset of each segment inside its document (0 unless it was split)

Record batches hold ``rows_per_batch`` rows (about 32 MiB of token ids, at least one row), so a reader
that maps the file touches only the batch it needs, and a writer never holds more than one batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT_NAME = "longtrove.shards"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
DEFAULT_MAX_SHARD_BYTES = 512 * 1024 * 1024
BATCH_TARGET_BYTES = 32 * 1024 * 1024
DTYPES: dict[str, type[np.unsignedinteger]] = {"uint32": np.uint32, "uint16": np.uint16}
STAT_FIELDS = ("documents", "tokens", "padding_tokens", "split_documents", "dropped_documents")


class ShardFormatError(ValueError):
    """A shard folder, index or shard that does not follow the format; the message names the file."""


def shard_name(rank: int, index: int) -> str:
    """`shard-RRRRR-NNNNN.arrow`: rank of the writer, then that rank's shard counter."""
    return f"shard-{rank:05d}-{index:05d}.arrow"


def shard_schema(seq_len: int, dtype: str = "uint32") -> pa.Schema:
    """The Arrow schema of a shard with rows of `seq_len` tokens."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    value_type = pa.uint32() if dtype == "uint32" else pa.uint16()
    return pa.schema(
        [
            pa.field("input_ids", pa.list_(value_type, seq_len), nullable=False),
            pa.field("doc_lengths", pa.list_(pa.int32()), nullable=False),
            pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
            pa.field("doc_offsets", pa.list_(pa.int64()), nullable=False),
        ],
        metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "seq_len": str(seq_len)},
    )


def rows_per_batch(seq_len: int, dtype: str = "uint32", batch_bytes: int = BATCH_TARGET_BYTES) -> int:
    """Rows per record batch: about `batch_bytes` of ids, never fewer than one row."""
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    return max(1, batch_bytes // (seq_len * itemsize))


def check_vocab_fits(vocab_size: int, dtype: str = "uint32", *, what: str = "tokenizer") -> None:
    """Refuse a vocabulary whose ids would not fit the shard dtype (they would wrap silently)."""
    limit = int(np.iinfo(DTYPES[dtype]).max) + 1
    if vocab_size > limit:
        raise ValueError(
            f"{what} has a vocabulary of {vocab_size:,} ids, more than {dtype} holds ({limit:,}); "
            f"use dtype='uint32'" + ("" if dtype != "uint32" else " is the largest supported")
        )


class _HashingFile:
    """A write-only file that hashes what passes through, so the checksum costs no second read."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.closed = False
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sha.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.closed = True

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    # pyarrow inspects these on Python file objects
    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size


class ShardWriter:
    """Write packed rows of one rank into bounded shards, each to a temp name then renamed.

    Rows are copied into a preallocated numpy batch; a full batch becomes one Arrow record batch
    (zero-copy from numpy). A shard is closed when its next batch would pass `max_shard_bytes`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        seq_len: int,
        pad_id: int,
        rank: int = 0,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        dtype: str = "uint32",
        batch_bytes: int = BATCH_TARGET_BYTES,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not 0 <= pad_id <= np.iinfo(DTYPES[dtype]).max:
            raise ValueError(f"pad_id {pad_id} does not fit {dtype}")
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.rank = rank
        self.dtype = dtype
        self.np_dtype = DTYPES[dtype]
        self.schema = shard_schema(seq_len, dtype)
        self.batch_rows = rows_per_batch(seq_len, dtype, batch_bytes)
        row_bytes = seq_len * np.dtype(self.np_dtype).itemsize
        # a shard holds whole batches: at least one row, at most max_shard_bytes of ids (when a row fits)
        fit_rows = max(1, max_shard_bytes // row_bytes)
        self.batch_rows = min(self.batch_rows, fit_rows)
        self.rows_per_shard = fit_rows // self.batch_rows * self.batch_rows
        self._buffer = np.empty((self.batch_rows, seq_len), dtype=self.np_dtype)
        self._filled = 0
        self._lengths: list[np.ndarray] = []
        self._ids: list[list[str]] = []
        self._offsets: list[np.ndarray] = []
        self._shard_index = 0
        self._shard_rows = 0
        self._shard_tokens = 0
        self._shard_docs = 0
        self._sink: _HashingFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._tmp_path: Path | None = None
        self._entries: list[dict[str, Any]] = []
        self._closed = False
        self.rows = 0
        self.tokens = 0
        self.padding_tokens = 0

    # -- public API ---------------------------------------------------------------------------

    def write(
        self,
        input_ids: np.ndarray,
        doc_lengths: np.ndarray | Sequence[int],
        *,
        doc_ids: Sequence[str] | None = None,
        doc_offsets: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        """Append one row. `input_ids` may be shorter than seq_len (it is padded) but not longer."""
        ids = np.asarray(input_ids)
        if ids.ndim != 1 or ids.shape[0] > self.seq_len:
            raise ValueError(f"row of shape {ids.shape} does not fit seq_len {self.seq_len}")
        lengths = np.asarray(doc_lengths, dtype=np.int32)
        used = int(lengths.sum())
        if used > ids.shape[0]:
            raise ValueError(f"doc_lengths sum to {used}, more than the {ids.shape[0]} ids given")
        row = self._next_row()
        row[:used] = ids[:used]
        row[used:] = self.pad_id
        self._commit_row(lengths, doc_ids, doc_offsets)

    def write_segments(
        self,
        segments: Sequence[np.ndarray],
        *,
        doc_ids: Sequence[str] | None = None,
        doc_offsets: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        """Append one row made of token arrays back to back, copied straight into the batch buffer."""
        lengths = np.fromiter((len(s) for s in segments), dtype=np.int32, count=len(segments))
        used = int(lengths.sum())
        if used > self.seq_len:
            raise ValueError(f"segments hold {used} tokens, more than seq_len {self.seq_len}")
        row = self._next_row()
        if len(segments) == 1:
            row[:used] = segments[0]
        elif segments:
            np.concatenate(segments, out=row[:used], casting="unsafe")
        row[used:] = self.pad_id
        self._commit_row(lengths, doc_ids, doc_offsets)

    def close(self) -> list[dict[str, Any]]:
        """Flush the last batch, finish the open shard, and return every shard entry of this writer."""
        if not self._closed:
            self._flush_batch()
            self._finish_shard()
            self._closed = True
        return list(self._entries)

    def abort(self) -> None:
        """Drop the unfinished shard (its temp file), keeping shards already renamed."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # best effort on the way out of an error
                self._writer.close()
        if self._sink is not None:
            self._sink.close()
        if self._tmp_path is not None and self._tmp_path.exists():
            self._tmp_path.unlink()
        self._writer = self._sink = self._tmp_path = None
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals ----------------------------------------------------------------------------

    def _next_row(self) -> np.ndarray:
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        return self._buffer[self._filled]

    def _commit_row(
        self,
        lengths: np.ndarray,
        doc_ids: Sequence[str] | None,
        doc_offsets: np.ndarray | Sequence[int] | None,
    ) -> None:
        n = len(lengths)
        ids = [""] * n if doc_ids is None else [str(d) for d in doc_ids]
        offsets = (
            np.zeros(n, dtype=np.int64) if doc_offsets is None else np.asarray(doc_offsets, dtype=np.int64)
        )
        if len(ids) != n or len(offsets) != n:
            raise ValueError(f"doc_ids/doc_offsets must have one entry per segment ({n})")
        used = int(lengths.sum())
        self._lengths.append(lengths)
        self._ids.append(ids)
        self._offsets.append(offsets)
        self._filled += 1
        self.rows += 1
        self.tokens += used
        self.padding_tokens += self.seq_len - used
        self._shard_tokens += used
        # a segment at offset 0 is the start of a document; continuations do not count again
        self._shard_docs += int(np.count_nonzero(offsets == 0))
        if self._filled == self.batch_rows:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if self._filled == 0:
            return
        if self._writer is None:
            self._open_shard()
        n = self._filled
        flat = pa.array(self._buffer[:n].reshape(-1))
        input_ids = pa.FixedSizeListArray.from_arrays(flat, self.seq_len)
        counts = np.fromiter((len(x) for x in self._lengths), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        list_offsets = pa.array(offsets)
        doc_lengths = pa.ListArray.from_arrays(
            list_offsets, pa.array(np.concatenate(self._lengths), pa.int32())
        )
        doc_ids = pa.ListArray.from_arrays(
            list_offsets, pa.array([d for row in self._ids for d in row], pa.string())
        )
        doc_offsets = pa.ListArray.from_arrays(
            list_offsets, pa.array(np.concatenate(self._offsets), pa.int64())
        )
        batch = pa.RecordBatch.from_arrays([input_ids, doc_lengths, doc_ids, doc_offsets], schema=self.schema)
        assert self._writer is not None
        self._writer.write_batch(batch)
        self._shard_rows += n
        self._filled = 0
        self._lengths, self._ids, self._offsets = [], [], []
        if self._shard_rows >= self.rows_per_shard:
            self._finish_shard()

    def _open_shard(self) -> None:
        name = shard_name(self.rank, self._shard_index)
        self._tmp_path = self.out_dir / f".{name}.tmp-{os.getpid()}"
        self._sink = _HashingFile(self._tmp_path)
        self._writer = pa.ipc.new_file(self._sink, self.schema)

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        assert self._sink is not None and self._tmp_path is not None
        self._writer.close()
        self._sink.close()
        name = shard_name(self.rank, self._shard_index)
        os.replace(self._tmp_path, self.out_dir / name)
        self._entries.append(
            {
                "path": name,
                "rows": self._shard_rows,
                "tokens": self._shard_tokens,
                "documents": self._shard_docs,
                "sha256": self._sink.hexdigest(),
            }
        )
        self._writer = self._sink = self._tmp_path = None
        self._shard_index += 1
        self._shard_rows = self._shard_tokens = self._shard_docs = 0


# -- index.json -------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_shard_path(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise ShardFormatError(f"{where}: shard path must be a non-empty string, got {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or "\\" in path or ".." in pure.parts or (len(path) > 1 and path[1] == ":"):
        raise ShardFormatError(f"{where}: shard path {path!r} must be relative to the folder, without '..'")
    return path


def write_index(
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: dict[str, Any],
    seq_len: int,
    shards: list[dict[str, Any]],
    stats: dict[str, Any],
    dtype: str = "uint32",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `index.json` atomically; call it last, once every shard listed is in place."""
    out_dir = Path(out_dir)
    where = str(out_dir / INDEX_FILE)
    tok_fields = ("name", "fingerprint", "vocab_size", "eos_id", "bos_id", "pad_id")
    missing = [k for k in tok_fields if k not in tokenizer]
    if missing:
        raise ShardFormatError(f"{where}: tokenizer entry lacks {missing}")
    missing = [k for k in STAT_FIELDS if k not in stats]
    if missing:
        raise ShardFormatError(f"{where}: stats lack {missing}")
    if dtype not in DTYPES:
        raise ShardFormatError(f"{where}: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    entries = []
    for i, shard in enumerate(shards):
        path = _check_shard_path(shard.get("path"), f"{where}: shards[{i}]")
        if not (out_dir / path).is_file():
            raise ShardFormatError(f"{where}: shards[{i}] {path!r} does not exist in {out_dir}")
        entries.append({k: shard[k] for k in ("path", "rows", "tokens", "documents", "sha256")})
    index: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tokenizer": {k: tokenizer[k] for k in tok_fields},
        "seq_len": int(seq_len),
        "dtype": dtype,
        "shards": entries,
        "stats": dict(stats),
    }
    if extra:
        index.update({k: v for k, v in extra.items() if k not in index})
    path = out_dir / INDEX_FILE
    atomic_write_text(path, json.dumps(index, indent=2, sort_keys=False) + "\n")
    return path


def read_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate `index.json` of a shard folder; errors name the file and the field."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise ShardFormatError(f"{path}: no index.json (the folder is not a finished shard folder)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(index, dict):
        raise ShardFormatError(f"{path}: top level must be an object")
    if index.get("format") != FORMAT_NAME:
        raise ShardFormatError(f"{path}: format is {index.get('format')!r}, expected {FORMAT_NAME!r}")
    if index.get("version") != FORMAT_VERSION:
        raise ShardFormatError(
            f"{path}: version {index.get('version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    for key, kind in (
        ("tokenizer", dict),
        ("seq_len", int),
        ("dtype", str),
        ("shards", list),
        ("stats", dict),
    ):
        if not isinstance(index.get(key), kind):
            raise ShardFormatError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if index["seq_len"] < 1:
        raise ShardFormatError(f"{path}: seq_len must be positive")
    if index["dtype"] not in DTYPES:
        raise ShardFormatError(f"{path}: dtype {index['dtype']!r} not one of {sorted(DTYPES)}")
    for i, shard in enumerate(index["shards"]):
        if not isinstance(shard, dict):
            raise ShardFormatError(f"{path}: shards[{i}] must be an object")
        _check_shard_path(shard.get("path"), f"{path}: shards[{i}]")
        for key in ("rows", "tokens", "documents"):
            if not isinstance(shard.get(key), int) or shard[key] < 0:
                raise ShardFormatError(f"{path}: shards[{i}].{key} missing or negative")
        if not isinstance(shard.get("sha256"), str) or len(shard["sha256"]) != 64:
            raise ShardFormatError(f"{path}: shards[{i}].sha256 missing or not a hex sha256")
    return index


# -- reading and checking ----------------------------------------------------------------------


def open_shard(path: str | os.PathLike[str]) -> pa.Table:
    """Memory-map a shard and return it as a table (zero-copy; the pages load on access)."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def file_sha256(path: str | os.PathLike[str], chunk: int = 8 * 1024 * 1024) -> str:
    """sha256 of a file read in large chunks (hashlib releases the GIL on big buffers)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def verify_shards(
    folder: str | os.PathLike[str], index: dict[str, Any] | None = None, *, progress: bool = False
) -> list[str]:
    """Check every shard against the index: checksum, rows, tokens, schema. Returns the problems found."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    index = read_index(folder) if index is None else index
    problems = []
    expected_schema = shard_schema(index["seq_len"], index["dtype"])
    for shard in tqdm(index["shards"], desc="verify", unit="shard", disable=not progress):
        path = folder / shard["path"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = file_sha256(path)
        if digest != shard["sha256"]:
            problems.append(f"{path}: sha256 {digest} does not match the index ({shard['sha256']})")
            continue
        try:
            with pa.memory_map(str(path), "r") as source:
                reader = pa.ipc.open_file(source)
                if not reader.schema.equals(expected_schema):
                    problems.append(f"{path}: schema differs from the index's seq_len/dtype")
                    continue
                rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
                lengths = (
                    pa.concat_arrays(
                        [
                            reader.get_batch(i).column("doc_lengths").flatten()
                            for i in range(reader.num_record_batches)
                        ]
                    )
                    if reader.num_record_batches
                    else pa.array([], pa.int32())
                )
                tokens = int(np.asarray(lengths, dtype=np.int64).sum())
        except pa.ArrowInvalid as e:
            problems.append(f"{path}: not a readable Arrow IPC file ({e})")
            continue
        if rows != shard["rows"]:
            problems.append(f"{path}: {rows} rows, index says {shard['rows']}")
        if tokens != shard["tokens"]:
            problems.append(f"{path}: {tokens} tokens, index says {shard['tokens']}")
    return problems


def unlisted_files(
    folder: str | os.PathLike[str], index: dict[str, Any], bookkeeping: Sequence[str] = ()
) -> list[str]:
    """Names in a shard folder that index.json does not list (hidden files and `bookkeeping` names aside).

    A stale shard of an earlier run is not part of the data, but `shard-*.arrow` globs of other readers
    (`datasets`, polars, duckdb) would pick it up.
    """
    listed = {s["path"] for s in index["shards"]} | {INDEX_FILE, *bookkeeping}
    return sorted(
        p.name for p in Path(folder).iterdir() if p.name not in listed and not p.name.startswith(".")
    )
