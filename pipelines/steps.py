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
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from pydantic import BaseModel, ConfigDict, Field, model_validator

from packing.format import DEFAULT_MAX_SHARD_BYTES, INDEX_FILE
from pipelines.inputs import input_readers, reader_counts


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
        dropped_before = reader_counts(self.counter_key)
        tail_tokens = 2 * options.seq_len if self.config.merge_tails else 0
        with ShardBuilder(out_dir, tokenizer, options, rank=rank, tail_tokens=tail_tokens) as builder:
            for document in data or ():
                batch.append(document)
                if len(batch) >= self.config.batch_size:
                    self._add(builder, batch)
                    batch = []
            if batch:
                self._add(builder, batch)
            dropped = reader_counts(self.counter_key)
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
    overwrite: bool = False,
    run_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read, tokenize and pack on Dask (one task per rank), then write `index.json`; returns the index.

    `step` is the TokenizeAndPack to use (readers may hold a reference to it to count empty texts).
    A non-empty output folder is refused unless `resume` (same options as the run that wrote it, see
    `pipelines.pack_output`) or `overwrite`; `run_options` are further options to hold equal on resume.
    """
    from packing.build import merge_ranks
    from pipelines.executor import DaskPipelineExecutor
    from pipelines.pack_output import prepare_output

    out_dir = Path(config.output_folder)
    # fail fast, before any worker starts: a bad tokenizer or separator is a config error
    tokenizer = load_for(config)
    options = pack_options(config, tokenizer)
    decisive = {
        "tokenizer": tokenizer.fingerprint,
        "seq_len": options.seq_len,
        "dtype": options.dtype,
        **options.describe(),
        "merge_tails": config.merge_tails,
        "tasks": tasks,
        **(run_options or {}),
    }
    prepare_output(out_dir, decisive, resume=resume, overwrite=overwrite)
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
    overwrite: bool = False,
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
        overwrite=overwrite,
        run_options={
            "inputs": [os.path.abspath(p) if os.path.exists(p) else p for p in inputs],
            "text_key": text_key,
            "id_key": id_key,
            "split": split,
            "skip_bad_records": skip_bad_records,
        },
    )
