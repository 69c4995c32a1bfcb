"""datatrove steps that tokenize and pack documents into Arrow shards, and the run that ties them to Dask.

`TokenizeAndPack` ends a pipeline: each rank encodes its documents in batches (one tokenizer call per batch,
not one per document), packs them and writes `shard-RRRRR-NNNNN.arrow` plus a manifest. The step's
`output_folder` is a DataFolder, so `DaskPipelineExecutor` stages a rank's files and moves them into place
only when the rank has finished. `WriteShardIndex` (or `merge_ranks`) then writes the one `index.json`.

From a recipe, the step is built from a plain mapping validated by `ShardsConfig`:

    - shards: {output_folder: out/shards, tokenizer: path/to/tokenizer.json, seq_len: 8192, eos: "</s>"}
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from pydantic import BaseModel, ConfigDict, Field, model_validator

from packing.format import DEFAULT_MAX_SHARD_BYTES, INDEX_FILE


class ShardsConfig(BaseModel):
    """Everything that decides the shards; YAML-friendly (every option but the first three has a default)."""

    model_config = ConfigDict(extra="forbid")

    output_folder: str
    tokenizer: str = Field(description="tokenizer.json path, folder, hub id or tiktoken encoding name")
    seq_len: int = Field(gt=0)
    eos: str | None = Field(None, description="token string appended after every document, e.g. '</s>'")
    eos_id: int | None = Field(None, ge=0)
    no_eos: bool = False
    bos: str | None = None
    bos_id: int | None = Field(None, ge=0)
    pad_id: int | None = Field(None, ge=0, description="default: the EOS id, or 0 without one")
    pool_tokens: int | None = Field(None, gt=0, description="tokens pooled per packing round")
    on_long: Literal["split", "drop"] = "split"
    max_shard_bytes: int = Field(DEFAULT_MAX_SHARD_BYTES, gt=0)
    dtype: Literal["uint32", "uint16"] = "uint32"
    batch_size: int = Field(1024, gt=0, description="documents per tokenizer call")
    verify_chars: int = Field(
        100_000,
        ge=0,
        description="characters of each rank's first input on which the tiktoken fast path is proved against "
        "`tokenizers` (a difference falls back to `tokenizers`, with a warning); 0: the fixed stress set only",
    )
    merge_tails: bool = Field(
        True, description="pack the emptiest last rows of all ranks together at the end (one part-empty row)"
    )

    @model_validator(mode="after")
    def _separator_is_explicit(self) -> ShardsConfig:
        if self.no_eos and (self.eos is not None or self.eos_id is not None):
            raise ValueError("no_eos contradicts eos/eos_id: choose one")
        if self.eos is not None and self.eos_id is not None:
            raise ValueError("give eos (a token string) or eos_id (a number), not both")
        if self.bos is not None and self.bos_id is not None:
            raise ValueError("give bos (a token string) or bos_id (a number), not both")
        return self


# Records that readers drop before any later step sees them (empty texts, bad JSON lines), per
# (counter key, thread, label). The executor copies steps for each rank, so readers cannot hold the packing
# step itself; they report here and the packing step running in the same thread reads its own share.
_READER_COUNTS: dict[tuple[str, int, str], int] = defaultdict(int)


def note_dropped(counter_key: str, label: str) -> None:
    """Count a record a reader dropped (label: "empty_documents" or "bad_records") for the packing step."""
    _READER_COUNTS[(counter_key, threading.get_ident(), label)] += 1


def _reader_counts(counter_key: str) -> dict[str, int]:
    ident = threading.get_ident()
    return {
        label: _READER_COUNTS[(counter_key, ident, label)] for label in ("empty_documents", "bad_records")
    }


def load_for(config: ShardsConfig) -> Any:
    """Load the tokenizer with the separator tokens named in the config."""
    from tokenization import load_tokenizer

    return load_tokenizer(
        config.tokenizer, eos_token=config.eos, bos_token=config.bos, verify_chars=config.verify_chars
    )


def pack_options(config: ShardsConfig, tokenizer: Any) -> Any:
    """PackOptions from a config, with separator ids checked against the tokenizer."""
    from packing.build import resolve_options

    return resolve_options(
        tokenizer,
        seq_len=config.seq_len,
        eos_id=config.eos_id,
        bos_id=config.bos_id,
        use_eos=not config.no_eos,
        use_bos=config.bos is not None or config.bos_id is not None,
        pad_id=config.pad_id,
        pool_tokens=config.pool_tokens,
        on_long=config.on_long,
        max_shard_bytes=config.max_shard_bytes,
        dtype=config.dtype,
    )


def _local_path(folder: DataFolder, what: str) -> Path:
    protocols = folder.fs.protocol if isinstance(folder.fs.protocol, tuple) else (folder.fs.protocol,)
    if not {"file", "local"} & set(protocols):
        raise ValueError(
            f"{what} {folder.path!r}: shards are written to a local (or mounted) folder, not {protocols}"
        )
    return Path(folder.path)


class TokenizeAndPack(PipelineStep):
    """Tokenize, pack and write this rank's shards (a terminal step: it yields no documents)."""

    name = "📦 tokenize+pack"
    type = "🔢 - TOKENIZER"

    def __init__(
        self, output_folder: DataFolderLike | None = None, config: ShardsConfig | None = None, **options: Any
    ):
        super().__init__()
        if config is None:
            if output_folder is not None:
                options["output_folder"] = (
                    output_folder if isinstance(output_folder, str) else output_folder.path
                )
            config = ShardsConfig(**options)
        elif options:
            raise TypeError("pass a ShardsConfig or keyword options, not both")
        self.config = config
        self.output_folder = (
            output_folder if isinstance(output_folder, DataFolder) else get_datafolder(config.output_folder)
        )
        # readers given this key (see `note_dropped`) have the records they drop counted here
        self.counter_key = uuid.uuid4().hex

    @classmethod
    def from_config(cls, mapping: dict[str, Any]) -> TokenizeAndPack:
        """Build from a recipe mapping (validated; unknown keys are an error naming them)."""
        return cls(config=ShardsConfig(**mapping))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from packing.build import ShardBuilder

        tokenizer = load_for(self.config)
        options = pack_options(self.config, tokenizer)
        out_dir = _local_path(self.output_folder, "output_folder")
        batch: list[Document] = []
        dropped_before = _reader_counts(self.counter_key)
        tail_tokens = 2 * options.seq_len if self.config.merge_tails else 0
        with ShardBuilder(out_dir, tokenizer, options, rank=rank, tail_tokens=tail_tokens) as builder:
            for document in data or ():
                batch.append(document)
                if len(batch) >= self.config.batch_size:
                    self._add(builder, batch)
                    batch = []
            if batch:
                self._add(builder, batch)
            dropped = _reader_counts(self.counter_key)
            builder.packer.stats.empty_documents += (
                dropped["empty_documents"] - dropped_before["empty_documents"]
            )
            builder.packer.stats.bad_records += dropped["bad_records"] - dropped_before["bad_records"]
            result = builder.close()
        for key, value in result.stats.items():
            self.stat_update(key, value=value, unit="rank")
        self.stat_update("shards", value=len(result.shards), unit="rank")
        return
        yield  # a generator that yields nothing: the documents end here

    def _add(self, builder: Any, batch: list[Document]) -> None:
        with self.track_time(unit="batch"):
            builder.add_texts([d.text for d in batch], [str(d.id) for d in batch])


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


def _check_first_record(path: str, text_key: str) -> None:
    """Fail before any worker starts when a jsonl file's first record lacks the text field."""
    import fsspec
    import orjson

    with fsspec.open(path, "rb", compression="infer") as f:
        for number, line in enumerate(f):
            if line.strip():
                try:
                    record = orjson.loads(line)
                except ValueError:
                    return  # the reader reports bad lines (or counts them with skip_bad_records)
                if isinstance(record, dict) and text_key not in record:
                    raise InputError(
                        f"{path} line {number + 1}: no field {text_key!r} (fields: {sorted(record)[:12]}); "
                        "name the text field with --text-key"
                    )
                return


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
    import pyarrow.parquet as pq
    from datatrove.pipeline.readers import HuggingFaceDatasetReader

    adapter = TextAdapter(text_key, id_key, counter_key)
    readers: list[PipelineStep] = []
    by_fs: dict[str, tuple[Any, list[str]]] = {}  # files grouped by filesystem, in the order given
    hub = 0
    for spec in inputs:
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
            if p.endswith(".parquet"):
                try:
                    with fs.open(p, "rb") as f:
                        names = pq.read_schema(f).names
                except Exception as e:  # noqa: BLE001 - any unreadable footer gets the same clear message
                    raise InputError(f"{url}: not a readable parquet file ({e})") from None
                if text_key not in names:
                    raise InputError(f"{url}: no column {text_key!r} (columns: {names[:12]}); use --text-key")
                columns_only = columns_only and id_key in names
            else:
                _check_first_record(url, text_key)
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


class WriteShardIndex(PipelineStep):
    """Write `index.json` over every rank's shards; run it with one task after the packing stage."""

    name = "🗂 shard index"
    type = "🔢 - TOKENIZER"

    def __init__(self, folder: DataFolderLike, world_size: int):
        super().__init__()
        # not called output_folder: the index is written atomically here, not staged per rank
        self.folder = folder if isinstance(folder, DataFolder) else get_datafolder(folder)
        self.world_size = world_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from packing.build import merge_ranks

        if data:
            yield from data
        if rank == 0:
            index = merge_ranks(_local_path(self.folder, "folder"), world_size=self.world_size)
            self.stat_update("shards", value=len(index["shards"]), unit="index")
            self.stat_update("tokens", value=index["stats"]["tokens"], unit="index")


def clear_index(folder: str | os.PathLike[str]) -> None:
    """Remove a finished folder's index before packing into it again, so no half-new folder looks done."""
    (Path(folder) / INDEX_FILE).unlink(missing_ok=True)


def run_pack(
    readers: Iterable[PipelineStep],
    config: ShardsConfig,
    *,
    tasks: int = 1,
    workers: int | None = None,
    logging_dir: str | None = None,
    resume: bool = False,
    client: Any = None,
    scheduler: str | None = None,
    progress: bool = True,
    step: TokenizeAndPack | None = None,
) -> dict[str, Any]:
    """Read, tokenize and pack on Dask (one task per rank), then write `index.json`; returns the index.

    `step` is the TokenizeAndPack to use (readers may hold a reference to it to count empty texts).
    """
    from packing.build import merge_ranks
    from pipelines.executor import DaskPipelineExecutor

    out_dir = Path(config.output_folder)
    # fail fast, before any worker starts: a bad tokenizer or separator is a config error
    tokenizer = load_for(config)
    pack_options(config, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_index(out_dir)
    executor = DaskPipelineExecutor(
        [*readers, step or TokenizeAndPack(config=config)],
        tasks=tasks,
        workers=workers,
        client=client,
        scheduler=scheduler,
        logging_dir=logging_dir or str(out_dir / "_logs"),
        skip_completed=resume,
        name="pack",
        progress=progress,
    )
    executor.run()
    return merge_ranks(out_dir, world_size=tasks)


def pack_inputs(
    inputs: list[str],
    config: ShardsConfig,
    *,
    text_key: str = "text",
    id_key: str = "id",
    split: str = "train",
    skip_bad_records: bool = False,
    workers: int | None = None,
    tasks: int | None = None,
    resume: bool = False,
    client: Any = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`longtrove pack` as a function: files, folders or datasets to a finished shard folder; returns the index.

    Ranks default to the workers, at most one per input file (a file is never split between ranks).
    """
    step = TokenizeAndPack(config=config)
    readers, count = input_readers(
        inputs,
        counter_key=step.counter_key,
        text_key=text_key,
        id_key=id_key,
        split=split,
        skip_bad_records=skip_bad_records,
    )
    workers = workers or os.cpu_count() or 1
    tasks = tasks or max(1, min(workers, count))
    return run_pack(
        readers,
        config,
        tasks=tasks,
        workers=workers,
        resume=resume,
        client=client,
        scheduler=scheduler,
        step=step,
        progress=progress,
    )


# -- the demo's packing stage -------------------------------------------------------------------------------

DEMO_SEQ_LEN = 1024  # the curated sample holds about 10K tokens
DEMO_EOS = "<|endoftext|>"
# Llama 3's pre-tokenizer regex: the tokenizer shape the fast path is built for.
_DEMO_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_demo_tokenizer(texts: list[str], path: Path, vocab_size: int = 8192) -> Path:
    """A byte-level BPE trained on the demo's own text: nothing to download, same texts give the same file."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_DEMO_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[DEMO_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    from packing.format import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tokenizer.to_str())
    return path


def demo_stage(ctx: Any) -> dict[str, Any]:
    """`longtrove demo`, after curation: tokenize and pack the curated documents and report the shard stats."""
    import pyarrow.parquet as pq

    curated = sorted(Path(ctx.curated_dir).rglob("*.parquet"))
    texts = [t for p in curated for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
    tokenizer = train_demo_tokenizer(texts, Path(ctx.out_dir) / "tokenizer" / "tokenizer.json")
    config = ShardsConfig(
        output_folder=str(Path(ctx.out_dir) / "shards"),
        tokenizer=str(tokenizer),
        seq_len=DEMO_SEQ_LEN,
        eos=DEMO_EOS,
    )
    workers = getattr(getattr(ctx.recipe, "executor", None), "workers", None)
    try:  # the cluster the curation ran on, when the caller keeps one open
        from distributed import default_client

        client = default_client()
    except ValueError:
        client = None
    index = pack_inputs([str(p) for p in curated], config, workers=workers, client=client, progress=False)
    stats = index["stats"]
    rows = sum(s["rows"] for s in index["shards"])
    return {
        "folder": config.output_folder,
        "tokenizer": str(tokenizer),
        "seq_len": DEMO_SEQ_LEN,
        "shards": len(index["shards"]),
        "rows": rows,
        "documents": stats["documents"],
        "tokens": stats["tokens"],
        "padding": f"{stats['padding_tokens'] / max(1, rows * DEMO_SEQ_LEN):.2%}",
        "split_documents": stats["split_documents"],
    }
