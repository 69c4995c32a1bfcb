"""datatrove readers that treat bad input the way the recipe says: skip and count it, or stop and name it.

datatrove's own readers drop a record without text after one warning and let a stray byte or a malformed line
abort the whole file. These subclasses check every record, count each kind of bad input in the step's stats
(``bad_input/<reason>``) and, with ``on_bad_record="fail"``, raise an error naming the file and line.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from typing import Any, Literal

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader
from datatrove.utils.logging import logger

BadRecordPolicy = Literal["skip", "fail"]
DEFAULT_MAX_DOCUMENT_CHARS = 8_000_000  # about 2M tokens: room for a 1M-token sequence with margin
_WARN_LIMIT = 5  # location warnings per reason and rank; the counts carry the rest


class BadInputError(ValueError):
    """A bad record or file met with ``on_bad_record: fail``; the message names the file and line."""


class RecordGuard:
    """Checks records before they become Documents (mixed into the readers below)."""

    on_bad_record: BadRecordPolicy
    max_document_chars: int | None

    def _guard_init(self, on_bad_record: BadRecordPolicy, max_document_chars: int | None) -> None:
        if on_bad_record not in ("skip", "fail"):
            raise ValueError(f"on_bad_record must be 'skip' or 'fail', got {on_bad_record!r}")
        self.on_bad_record = on_bad_record
        self.max_document_chars = max_document_chars
        self._warned: dict[str, int] = {}

    def bad(self, reason: str, where: str, detail: str) -> None:
        """Count a bad record, or raise if the recipe says to fail."""
        message = f"{where}: {reason}: {detail}"
        if self.on_bad_record == "fail":
            raise BadInputError(message + " (set input.on_bad_record: skip to skip and count such records)")
        self.stat_update(f"bad_input/{reason}")
        seen = self._warned.get(reason, 0)
        if seen < _WARN_LIMIT:
            logger.warning(f"skipping bad input {message}")
        self._warned[reason] = seen + 1

    def check_record(self, data: dict, where: str) -> bool:
        """True if `data` holds a usable text under `self.text_key`."""
        if self.text_key not in data:
            self.bad("missing_text", where, f"no field {self.text_key!r} (fields: {sorted(data)[:10]})")
            return False
        text = data[self.text_key]
        if not isinstance(text, str):
            self.bad("not_text", where, f"field {self.text_key!r} is {type(text).__name__}, not a string")
            return False
        if not text.strip():
            self.bad("empty", where, f"field {self.text_key!r} is empty")
            return False
        if self.max_document_chars and len(text) > self.max_document_chars:
            self.bad(
                "too_long",
                where,
                f"{len(text):,} characters > input.max_document_chars={self.max_document_chars:,}",
            )
            return False
        return True


class DealtFiles:
    """Reads this rank's share of one numbered list of files (file n goes to rank n % ranks), given as
    ``files=[(n, path under data_folder), ...]``.

    datatrove's readers each share out their own listing, so several readers of one file each would all give
    their file to rank 0; numbering every input file in one list deals them out over all ranks. Without
    ``files`` the reader lists its folder as datatrove does.
    """

    files: list[tuple[int, str]] | None

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.files is None:
            yield from super().run(data, rank, world_size)
            return
        if data:
            yield from data
        self._log_limit_scope(rank, world_size)
        for document in self.read_files_shard([path for n, path in self.files if n % world_size == rank]):
            self.update_doc_stats(document)
            yield document


def dealt_input_files(paths: list[str], glob: str | None) -> list[tuple[DataFolder, list[tuple[int, str]]]]:
    """Every file of the input paths (files or folders, any fsspec filesystems) numbered in one list, in the
    order given (a folder's files sorted), grouped by filesystem: (folder holding them, [(n, path under it)])."""
    from fsspec.core import url_to_fs

    # filesystem and bucket (object stores have no common root above it) -> {full path on it: n}
    groups: dict[tuple[Any, str], dict[str, int]] = {}
    count = 0
    for spec in paths:
        fs, fs_path = url_to_fs(spec)
        if fs.isdir(fs_path):
            folder = DataFolder(fs_path, fs=fs)
            found = [posixpath.join(fs_path, rel) for rel in folder.list_files(glob_pattern=glob)]
        else:
            found = [fs_path]
        for path in found:
            files = groups.setdefault((fs, "" if path.startswith("/") else path.split("/", 1)[0]), {})
            if path not in files:  # a file named twice (itself and in its folder) is read once
                files[path] = count
                count += 1
    if not groups and paths:  # nothing to read: still one reader, so the stage keeps its shape and counts
        fs, fs_path = url_to_fs(paths[0])
        return [(DataFolder(fs_path, fs=fs), [])]
    dealt = []
    for (fs, _), files in groups.items():
        root = posixpath.commonpath([posixpath.dirname(p) for p in files])
        dealt.append((DataFolder(root, fs=fs), [(n, p[len(root) :].lstrip("/")) for p, n in files.items()]))
    return dealt


class GuardedJsonlReader(DealtFiles, RecordGuard, JsonlReader):
    """JSONL, decoded line by line so one bad line costs one record, not the file."""

    name = "🐿 Jsonl (checked)"

    def __init__(
        self,
        data_folder,
        *,
        on_bad_record: BadRecordPolicy = "skip",
        max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
        files: list[tuple[int, str]] | None = None,
        **kwargs,
    ):
        super().__init__(data_folder, **kwargs)
        self._guard_init(on_bad_record, max_document_chars)
        self.files = files

    def read_file(self, filepath: str) -> Iterator[Document]:
        try:
            import orjson

            loads = orjson.loads
        except ImportError:  # pragma: no cover - orjson ships with datatrove[processing]
            loads = json.loads
        path = self.data_folder.resolve_paths(filepath)
        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{path}:{lineno}"
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.bad("bad_utf8", where, f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    data = loads(line)
                except ValueError as e:
                    self.bad("bad_json", where, f"malformed JSON ({e})")
                    continue
                if not isinstance(data, dict):
                    self.bad("bad_json", where, f"a JSON {type(data).__name__}, not an object")
                    continue
                if not self.check_record(data, where):
                    continue
                with self.track_time():
                    document = self.get_document_from_dict(data, filepath, lineno - 1)
                if document:
                    yield document


def _read_parquet_checked(reader: ParquetReader | GuardedParquetReader, filepath: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = reader.data_folder.resolve_paths(filepath)
    row = 0
    try:
        with reader.data_folder.open(filepath, "rb") as f, pq.ParquetFile(f) as pqf:
            if reader.text_key not in pqf.schema_arrow.names:
                reader.bad(
                    "missing_text",
                    path,
                    f"no column {reader.text_key!r} (columns: {pqf.schema_arrow.names[:10]}); whole file skipped",
                )
                return
            columns = (
                None
                if reader.read_metadata
                else [c for c in (reader.text_key, reader.id_key) if c in pqf.schema_arrow.names]
            )
            for batch in pqf.iter_batches(batch_size=reader.batch_size, columns=columns):
                for data in batch.to_pylist():
                    row += 1
                    if not reader.check_record(data, f"{path}:row {row}"):
                        continue
                    document = reader.get_document_from_dict(data, filepath, row - 1)
                    if document:
                        yield document
    except (pa.ArrowException, OSError) as e:
        # documents already yielded from this file were read intact; the rest of the file is lost
        reader.bad("bad_file", path, f"unreadable parquet after {row} rows ({type(e).__name__}: {e})")


class GuardedParquetReader(DealtFiles, RecordGuard, ParquetReader):
    """Parquet, with a truncated or corrupt file counted (or named) instead of aborting the rank."""

    name = "📒 Parquet (checked)"

    def __init__(
        self,
        data_folder,
        *,
        on_bad_record: BadRecordPolicy = "skip",
        max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
        files: list[tuple[int, str]] | None = None,
        **kwargs,
    ):
        super().__init__(data_folder, **kwargs)
        self._guard_init(on_bad_record, max_document_chars)
        self.files = files

    def read_file(self, filepath: str) -> Iterator[Document]:
        yield from _read_parquet_checked(self, filepath)


class GuardedHuggingFaceReader(RecordGuard, HuggingFaceDatasetReader):
    """A Hugging Face dataset (hub id from the local cache, a local dataset folder, or a builder such as
    ``parquet`` with ``data_files``), each row checked."""

    name = "🤗 HuggingFace (checked)"

    def __init__(
        self,
        dataset: str,
        *,
        on_bad_record: BadRecordPolicy = "skip",
        max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
        **kwargs,
    ):
        super().__init__(dataset, **kwargs)
        self._guard_init(on_bad_record, max_document_chars)

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str):
        if not self.check_record(data, f"{self.dataset}:row {id_in_file}"):
            return None
        return super().get_document_from_dict(data, source_file, id_in_file)


class RankFileReader(ParquetReader):
    """Reads back exactly the file that the same rank wrote in an earlier stage (``<rank:05d>.parquet``).

    Dedup filters match documents by their position within a rank, so the rank must see the same documents in
    the same order as when their signatures were computed; sharding a listing would shift files between ranks
    as soon as one rank wrote nothing.
    """

    name = "📒 Parquet (same rank)"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        filename = rank_filename(rank)
        if not self.data_folder.exists(filename):
            return
        for document in self.read_files_shard([filename]):
            self.update_doc_stats(document)
            yield document


def rank_filename(rank: int) -> str:
    return f"{rank:05d}.parquet"
