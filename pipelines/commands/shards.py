"""`longtrove pack` (text datasets to packed Arrow shards on Dask) and `longtrove inspect` (check a shard folder)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")


class TextAdapter:
    """Turn one raw record into a datatrove document dict, strictly: a missing or non-text field is an error
    naming the file and record; an empty text is counted for the packing step (datatrove drops it unseen)."""

    def __init__(self, text_key: str, id_key: str, counter_key: str) -> None:
        self.text_key = text_key
        self.id_key = id_key
        self.counter_key = counter_key

    def __call__(self, reader: Any, data: dict, path: str, id_in_file: int | str) -> dict:
        from pipelines.steps import note_empty_text

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
            note_empty_text(self.counter_key)
        doc_id = data.get(self.id_key)
        return {
            "text": text,
            "id": str(doc_id) if doc_id is not None else f"{path}/{id_in_file}",
            "metadata": {},
        }


def input_readers(
    inputs: list[str], *, text_key: str, id_key: str, split: str, counter_key: str
) -> tuple[list[Any], int]:
    """datatrove readers for files, folders and Hugging Face dataset names; also the number of input files.

    All parquet and jsonl files go into one reader that deals them out over ranks together.
    """
    import pyarrow.parquet as pq
    from datatrove.pipeline.readers import HuggingFaceDatasetReader

    from pipelines.steps import FilesReader

    adapter = TextAdapter(text_key, id_key, counter_key)
    readers: list[Any] = []
    files: list[Path] = []
    hub = 0
    for spec in inputs:
        path = Path(spec[3:] if spec.startswith("hf:") else spec)
        if spec.startswith("hf:") or (not path.exists() and _HUB_ID.match(spec)):
            name = spec[3:] if spec.startswith("hf:") else spec
            readers.append(
                HuggingFaceDatasetReader(
                    name, dataset_options={"split": split}, adapter=adapter, text_key=text_key
                )
            )
            hub += 1
        elif not path.exists():
            raise typer.BadParameter(
                f"{spec}: no such file or folder (use hf:NAME for a Hugging Face dataset)"
            )
        elif path.is_dir():
            found = sorted(
                {
                    p
                    for suffix in (".parquet", *_JSONL_SUFFIXES)
                    for p in path.rglob(f"*{suffix}")
                    if p.is_file()
                }
            )
            if not found:
                raise typer.BadParameter(f"{spec}: no .parquet or .jsonl files inside")
            files += found
        elif path.name.endswith((".parquet", *_JSONL_SUFFIXES)):
            files.append(path)
        else:
            raise typer.BadParameter(f"{spec}: not a .parquet or .jsonl file")
    if files:
        files = list(dict.fromkeys(p.resolve() for p in files))
        columns_only = True
        for p in files:
            if p.name.endswith(".parquet"):
                names = pq.read_schema(p).names
                if text_key not in names:
                    raise typer.BadParameter(
                        f"{p}: no column {text_key!r} (columns: {names[:12]}); use --text-key"
                    )
                columns_only = columns_only and id_key in names
        root = Path(os.path.commonpath([p.parent for p in files]))
        relative = [str(p.relative_to(root)) for p in files]
        readers.append(
            FilesReader(
                str(root),
                relative,
                adapter=adapter,
                text_key=text_key,
                id_key=id_key,
                parquet_columns_only=columns_only,
            )
        )
    return readers, hub + len(files)


def _print_summary(index: dict[str, Any], folder: Path, problems: list[str] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    stats = index["stats"]
    seq_len = index["seq_len"]
    rows = sum(s["rows"] for s in index["shards"])
    capacity = rows * seq_len
    fill = stats["tokens"] / capacity if capacity else 0.0
    tok = index["tokenizer"]
    table = Table(title=f"{folder}", show_header=False, title_justify="left")
    table.add_row(
        "tokenizer", f"{tok['name']} (vocab {tok['vocab_size']:,}, fingerprint {tok['fingerprint'][:12]}…)"
    )
    table.add_row("separators", f"eos_id={tok['eos_id']} bos_id={tok['bos_id']} pad_id={tok['pad_id']}")
    table.add_row("seq_len / dtype", f"{seq_len:,} / {index['dtype']}")
    table.add_row("shards / rows", f"{len(index['shards']):,} / {rows:,}")
    table.add_row("documents", f"{stats['documents']:,}")
    table.add_row("tokens", f"{stats['tokens']:,}")
    table.add_row("padding tokens", f"{stats['padding_tokens']:,} ({1 - fill:.3%})")
    table.add_row("fill rate", f"{fill:.3%}")
    table.add_row("split documents", f"{stats['split_documents']:,}")
    table.add_row("dropped documents", f"{stats['dropped_documents']:,}")
    if "empty_documents" in stats:
        table.add_row("empty documents", f"{stats['empty_documents']:,}")
    if problems is not None:
        table.add_row("checksums", "all match" if not problems else f"[red]{len(problems)} problem(s)[/red]")
    console = Console()
    console.print(table)
    for problem in problems or []:
        console.print(f"[red]✗[/red] {problem}")


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach `pack` and `inspect` to the app."""

    @app.command("pack")
    def pack(
        inputs: Annotated[
            list[str], typer.Argument(help="parquet/jsonl files or folders, or hf:NAME datasets")
        ],
        tokenizer: Annotated[str, typer.Option(help="tokenizer.json, folder, hub id or tiktoken encoding")],
        seq_len: Annotated[int, typer.Option(help="tokens per packed sequence (512 … 1048576 and more)")],
        out: Annotated[Path, typer.Option(help="shard folder to write")],
        text_key: Annotated[str, typer.Option(help="field holding the text")] = "text",
        id_key: Annotated[str, typer.Option(help="field holding the document id")] = "id",
        eos: Annotated[
            str | None, typer.Option(help="token appended after every document, e.g. '</s>'")
        ] = None,
        eos_id: Annotated[int | None, typer.Option(help="the same, as an id")] = None,
        no_eos: Annotated[bool, typer.Option("--no-eos", help="pack without a document separator")] = False,
        bos: Annotated[str | None, typer.Option(help="token put before every document")] = None,
        bos_id: Annotated[int | None, typer.Option(help="the same, as an id")] = None,
        pad_id: Annotated[int | None, typer.Option(help="padding id (default: the EOS id, or 0)")] = None,
        pool_tokens: Annotated[
            int | None, typer.Option(help="tokens per packing round (default max(16M, 32 rows))")
        ] = None,
        on_long: Annotated[str, typer.Option(help="documents longer than seq_len: split or drop")] = "split",
        max_shard_mb: Annotated[int, typer.Option(help="shard size bound, MiB")] = 512,
        dtype: Annotated[
            str, typer.Option(help="uint32, or uint16 for vocabularies up to 65,536")
        ] = "uint32",
        split: Annotated[str, typer.Option(help="split of hf: datasets")] = "train",
        workers: Annotated[
            int | None, typer.Option(help="Dask worker processes (default: one per core)")
        ] = None,
        tasks: Annotated[
            int | None, typer.Option(help="ranks (default: workers, at most one per input file)")
        ] = None,
        resume: Annotated[
            bool, typer.Option(help="keep ranks finished by an earlier run of the same command")
        ] = False,
    ) -> None:
        """Tokenize and pack text datasets into Arrow shards plus index.json (see README, Shard format)."""
        from pydantic import ValidationError

        from pipelines.executor import RankFailedError
        from pipelines.steps import ShardsConfig, TokenizeAndPack, run_pack

        try:
            config = ShardsConfig(
                output_folder=str(out),
                tokenizer=tokenizer,
                seq_len=seq_len,
                eos=eos,
                eos_id=eos_id,
                no_eos=no_eos,
                bos=bos,
                bos_id=bos_id,
                pad_id=pad_id,
                pool_tokens=pool_tokens,
                on_long=on_long,
                max_shard_bytes=max_shard_mb * 1024 * 1024,
                dtype=dtype,
            )
        except ValidationError as e:
            raise typer.BadParameter(str(e)) from None
        step = TokenizeAndPack(config=config)
        readers, files = input_readers(
            inputs, text_key=text_key, id_key=id_key, split=split, counter_key=step.counter_key
        )
        workers = workers or os.cpu_count() or 1
        tasks = tasks or max(1, min(workers, files))
        try:
            index = run_pack(readers, config, tasks=tasks, workers=workers, resume=resume, step=step)
        except (ValueError, OSError, RankFailedError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        _print_summary(index, out, None)

    @app.command("inspect")
    def inspect(
        folder: Annotated[Path, typer.Argument(help="shard folder holding index.json")],
        verify: Annotated[bool, typer.Option(help="check every shard's sha256, rows and tokens")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="print the index stats as JSON")] = False,
    ) -> None:
        """Show a shard folder's stats and fill rate, and verify its checksums (exit 1 on a mismatch)."""
        from packing.format import ShardFormatError, read_index, verify_shards

        try:
            index = read_index(folder)
        except ShardFormatError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        problems = verify_shards(folder, index) if verify else None
        if as_json:
            rows = sum(s["rows"] for s in index["shards"])
            capacity = rows * index["seq_len"]
            report = {
                "seq_len": index["seq_len"],
                "shards": len(index["shards"]),
                "rows": rows,
                "fill_rate": index["stats"]["tokens"] / capacity if capacity else 0.0,
                "stats": index["stats"],
                "tokenizer": index["tokenizer"],
                "problems": problems,
            }
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_summary(index, folder, problems)
        if problems:
            raise typer.Exit(1)
