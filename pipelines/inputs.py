"""Reading the inputs of `longtrove pack`: parquet and jsonl files or folders (local or fsspec URLs) and
Hugging Face datasets, as datatrove readers that share files out over ranks and treat records strictly.

Records a reader drops (empty texts, bad JSON lines) are counted per thread through `note_dropped`, so the
packing step running in the same thread can report them (the executor copies steps for each rank, so a reader
cannot hold the packing step itself).
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

# Records that readers drop before any later step sees them (empty texts, bad JSON lines), per
# (counter key, thread, label). The executor copies steps for each rank, so readers cannot hold the packing
# step itself; they report here and the packing step running in the same thread reads its own share.
_READER_COUNTS: dict[tuple[str, int, str], int] = defaultdict(int)


def note_dropped(counter_key: str, label: str) -> None:
    """Count a record a reader dropped (label: "empty_documents" or "bad_records") for the packing step."""
    _READER_COUNTS[(counter_key, threading.get_ident(), label)] += 1


def reader_counts(counter_key: str) -> dict[str, int]:
    """The records readers in this thread dropped so far under `counter_key`, by label."""
    ident = threading.get_ident()
    return {
        label: _READER_COUNTS[(counter_key, ident, label)] for label in ("empty_documents", "bad_records")
    }


class FilesReader(PipelineStep):
    """Read parquet and jsonl files, sharing them out over ranks as one list (file i goes to rank i % ranks).

    datatrove's readers each share out their own files, so two readers with one file each would both give
    it to rank 0; here the files of both formats (and of any fsspec filesystems) are dealt out together.
    `files` holds (root, path under root) pairs; roots are local folders or fsspec URLs. A jsonl line that is
    not a JSON object stops the run naming file and line, or is counted in `bad_records` with
    `skip_bad_records` (datatrove's JsonlReader would log it and go on).
    """

    name = "📂 parquet+jsonl"
    type = "📖 - READER"

    def __init__(
        self,
        files: list[tuple[str, str]],
        *,
        adapter: Any,
        text_key: str = "text",
        id_key: str = "id",
        parquet_columns_only: bool = True,
        skip_bad_records: bool = False,
        counter_key: str = "",
    ):
        super().__init__()
        self.files = [tuple(f) for f in files]
        self.adapter = adapter
        self.text_key = text_key
        self.id_key = id_key
        self.parquet_columns_only = parquet_columns_only
        self.skip_bad_records = skip_bad_records
        self.counter_key = counter_key
        self._readers: dict[tuple[str, str], Any] = {}

    def _reader(self, root: str, kind: str) -> Any:
        from datatrove.pipeline.readers import JsonlReader, ParquetReader

        if (root, kind) not in self._readers:
            options = {"adapter": self.adapter, "text_key": self.text_key, "id_key": self.id_key}
            if kind == "parquet":
                self._readers[root, kind] = ParquetReader(
                    root, read_metadata=not self.parquet_columns_only, **options
                )
            else:
                self._readers[root, kind] = JsonlReader(root, **options)
        return self._readers[root, kind]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        for root, path in self.files[rank::world_size]:
            self.stat_update("input_files")
            if path.endswith(".parquet"):
                documents = self._reader(root, "parquet").read_file(path)
            else:
                documents = self._read_jsonl(self._reader(root, "jsonl"), path)
            for document in documents:
                self.stat_update("documents")
                yield document

    def _read_jsonl(self, reader: Any, path: str) -> DocumentsPipeline:
        import orjson

        with reader.data_folder.open(path, "rb", compression="infer") as f:
            for number, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError(f"a JSON {type(record).__name__}, not an object")
                except ValueError as e:  # orjson.JSONDecodeError is a ValueError
                    if not self.skip_bad_records:
                        raise ValueError(
                            f"{path} line {number + 1}: not a JSON object ({e}); fix it, or pass "
                            "--skip-bad-records to count and skip such lines"
                        ) from None
                    note_dropped(self.counter_key, "bad_records")
                    self.stat_update("bad_records")
                    continue
                document = reader.get_document_from_dict(record, path, number)
                if document:
                    yield document


class TextAdapter:
    """Turn one raw record into a datatrove document dict, strictly: a missing or non-text field is an error
    naming the file and record; an empty text is counted for the packing step (datatrove drops it unseen)."""

    def __init__(self, text_key: str, id_key: str, counter_key: str) -> None:
        self.text_key = text_key
        self.id_key = id_key
        self.counter_key = counter_key

    def __call__(self, reader: Any, data: dict, path: str, id_in_file: int | str) -> dict:
        if self.text_key not in data:
            raise ValueError(
                f"{path} record {id_in_file}: no field {self.text_key!r} (fields: {sorted(data)[:12]}); "
                "name the text field with --text-key"
            )
        text = data[self.text_key]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ValueError(
                f"{path} record {id_in_file}: field {self.text_key!r} is {type(text).__name__}, not text"
            )
        if not text:
            note_dropped(self.counter_key, "empty_documents")
        doc_id = data.get(self.id_key)
        return {
            "text": text,
            "id": str(doc_id) if doc_id is not None else f"{path}/{id_in_file}",
            "metadata": {},
        }


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")


class InputError(ValueError):
    """An input that cannot be read as text documents; the message names it."""


class UnreadableInputError(InputError):
    """An input file that cannot be read at all (e.g. a truncated parquet file)."""


def check_text_field(
    path: str,
    text_key: str,
    *,
    parquet: bool,
    hint: str = "name the text field with --text-key",
    records: int = 1,
) -> list[str] | None:
    """Fail before any worker starts when an input cannot hold the text field: a parquet file without the
    column, or a jsonl file none of whose first `records` records has the field. Returns a parquet file's
    column names."""
    if not parquet:
        _check_first_record(path, text_key, hint, records)
        return None
    import fsspec
    import pyarrow.parquet as pq

    try:
        with fsspec.open(path, "rb") as f:
            names = pq.read_schema(f).names
    except Exception as e:  # noqa: BLE001 - any unreadable footer gets the same clear message
        raise UnreadableInputError(f"{path}: not a readable parquet file ({e})") from None
    if text_key not in names:
        raise InputError(f"{path}: no column {text_key!r} (columns: {names[:12]}); {hint}")
    return names


def _check_first_record(
    path: str, text_key: str, hint: str = "name the text field with --text-key", records: int = 1
) -> None:
    """Fail before any worker starts when none of a jsonl file's first `records` JSON objects (pack: the first
    one) has the text field; lines that are not JSON objects are left to the reader."""
    import fsspec
    import orjson

    first: tuple[int, dict] | None = None
    seen = 0
    try:
        with fsspec.open(path, "rb", compression="infer") as f:
            for number, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except ValueError:
                    record = None  # the reader reports bad lines (or counts them with skip_bad_records)
                if isinstance(record, dict):
                    if text_key in record:
                        return
                    first = first or (number + 1, record)
                    seen += 1
                if seen >= records or number >= 10 * records:
                    break
    except Exception as e:  # noqa: BLE001 - a broken compressed stream, whatever the codec raises
        raise UnreadableInputError(f"{path}: not readable ({type(e).__name__}: {e})") from None
    if first is not None:
        raise InputError(
            f"{path} line {first[0]}: no field {text_key!r} (fields: {sorted(first[1])[:12]}); {hint}"
        )


def _list_files(spec: str) -> tuple[Any, list[str]] | None:
    """(filesystem, data files) for a local or fsspec path/URL, or None when nothing is there."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(spec)
    if not fs.exists(path):
        return None
    if fs.isdir(path):
        base = path.rstrip("/")
        found = sorted(
            {
                p
                for suffix in (".parquet", *_JSONL_SUFFIXES)
                for p in fs.glob(f"{base}/**/*{suffix}")
                if fs.isfile(p)
            }
        )
        if not found:
            raise InputError(f"{spec}: no .parquet or .jsonl files inside")
        return fs, found
    if not path.endswith((".parquet", *_JSONL_SUFFIXES)):
        raise InputError(f"{spec}: not a .parquet or .jsonl file")
    return fs, [path]


def _named_files_reader(spec: str, counter_key: str, skip_bad_records: bool) -> tuple[PipelineStep, int] | None:
    """The files of a catalogue dataset (local copy under $LONGTROVE_DATASETS_DIR, or the hub with the user's
    token) read with the catalogue's text and id columns; access problems fail here, before any worker starts."""
    from pipelines.datasets.catalog import DatasetAccessError, list_files, parse_named_spec, require_text

    try:
        source = parse_named_spec(spec)
        if source is None:
            return None
        text_key = require_text(source)
        paths = list_files(source)
    except DatasetAccessError as e:
        raise InputError(str(e)) from None
    root = source.root.rstrip("/")
    files = [(root, p[len(root) :].lstrip("/")) for p in paths]
    adapter = TextAdapter(text_key, source.id_key, counter_key)
    reader = FilesReader(
        files, adapter=adapter, text_key=text_key, id_key=source.id_key, skip_bad_records=skip_bad_records,
        counter_key=counter_key,
    )
    return reader, len(files)


def input_readers(
    inputs: list[str],
    *,
    counter_key: str,
    text_key: str = "text",
    id_key: str = "id",
    split: str = "train",
    skip_bad_records: bool = False,
) -> tuple[list[PipelineStep], int]:
    """Readers for parquet/jsonl files and folders of them (local paths or fsspec URLs such as s3://) and
    Hugging Face datasets (`hf:NAME`, or a hub id that is not a path); also the number of inputs that ranks
    can share out."""
    from datatrove.pipeline.readers import HuggingFaceDatasetReader

    adapter = TextAdapter(text_key, id_key, counter_key)
    readers: list[PipelineStep] = []
    by_fs: dict[str, tuple[Any, list[str]]] = {}  # files grouped by filesystem, in the order given
    hub = 0
    for spec in inputs:
        named = _named_files_reader(spec, counter_key, skip_bad_records)
        if named is not None:  # a catalogue dataset, NAME or NAME:CONFIG (see `longtrove datasets`)
            readers.append(named[0])
            hub += named[1]
            continue
        listed = None if spec.startswith("hf:") else _list_files(spec)
        if spec.startswith("hf:") or (listed is None and "://" not in spec and _HUB_ID.match(spec)):
            name = spec[3:] if spec.startswith("hf:") else spec
            options = {"split": split}
            # streamed: records flow without a full download or a cache copy; ranks take their share
            readers.append(
                HuggingFaceDatasetReader(
                    name, dataset_options=options, streaming=True, adapter=adapter, text_key=text_key
                )
            )
            hub += 1
            continue
        if listed is None:
            raise InputError(f"{spec}: no such file or folder (use hf:NAME for a Hugging Face dataset)")
        fs, paths = listed
        key = fs.unstrip_protocol("/")
        by_fs.setdefault(key, (fs, []))[1].extend(paths)
    files: list[tuple[str, str]] = []
    columns_only = True
    for fs, paths in by_fs.values():
        paths = list(dict.fromkeys(paths))
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        for p in paths:
            url = p if local else fs.unstrip_protocol(p)
            names = check_text_field(url, text_key, parquet=p.endswith(".parquet"))
            if names is not None:
                columns_only = columns_only and id_key in names
        root = os.path.commonpath([p.rsplit("/", 1)[0] if "/" in p else "" for p in paths])
        root_url = (root or "/") if local else fs.unstrip_protocol(root)
        files += [(root_url, p[len(root) :].lstrip("/")) for p in paths]
    if files:
        readers.append(
            FilesReader(
                files,
                adapter=adapter,
                text_key=text_key,
                id_key=id_key,
                parquet_columns_only=columns_only,
                skip_bad_records=skip_bad_records,
                counter_key=counter_key,
            )
        )
    return readers, hub + len(files)
