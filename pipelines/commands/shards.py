"""`longtrove pack` (text datasets to packed Arrow shards on Dask) and `longtrove inspect` (check a shard folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

MIN_SEQ_LEN = 512


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def one_line(error: Any) -> str:
    """A pydantic ValidationError as one line naming the options at fault (no pydantic text or URL)."""
    parts = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in item["loc"])
        parts.append(f"--{loc.replace('_', '-')}: {message}" if loc else message)
    return "; ".join(parts)


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
    if stats.get("bad_records"):
        table.add_row("bad records skipped", f"{stats['bad_records']:,}")
    if problems is not None:
        table.add_row("checks", "all pass" if not problems else f"[red]{len(problems)} problem(s)[/red]")
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
        seq_len: Annotated[
            int, typer.Option(help=f"tokens per packed sequence ({MIN_SEQ_LEN} … 1048576 and more)")
        ],
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
            bool, typer.Option(help="keep ranks finished by an earlier run with the same options")
        ] = False,
        overwrite: Annotated[
            bool,
            typer.Option(help="replace the shards of an earlier run in --out (a non-empty --out is refused)"),
        ] = False,
        scheduler: Annotated[
            str | None, typer.Option(help="address of a running Dask scheduler (default: a local cluster)")
        ] = None,
        skip_bad_records: Annotated[
            bool, typer.Option(help="count and skip jsonl lines that are not JSON objects (default: stop)")
        ] = False,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    ) -> None:
        """Tokenize and pack text datasets into Arrow shards plus index.json (see docs/shards.md, Shard format)."""
        from pydantic import ValidationError

        from pipelines.executor import RankFailedError
        from pipelines.steps import ShardsConfig, pack_inputs

        if seq_len < MIN_SEQ_LEN:
            _fail(f"--seq-len {seq_len}: must be at least {MIN_SEQ_LEN} tokens", code=2)
        try:
            # absolute paths: workers of a remote scheduler do not share this shell's working directory
            config = ShardsConfig(
                output_folder=str(out.resolve()),
                tokenizer=str(Path(tokenizer).resolve()) if Path(tokenizer).exists() else tokenizer,
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
            _fail(one_line(e), code=2)
        try:
            index = pack_inputs(
                inputs,
                config,
                text_key=text_key,
                id_key=id_key,
                split=split,
                skip_bad_records=skip_bad_records,
                workers=workers,
                tasks=tasks,
                resume=resume,
                overwrite=overwrite,
                scheduler=scheduler,
                progress=progress,
            )
        except KeyboardInterrupt:  # one line, not an error: the finished ranks are kept
            typer.echo(
                "interrupted: rerun the same command with --resume to keep the ranks that finished", err=True
            )
            raise typer.Exit(130) from None
        except RankFailedError as e:
            _fail(str(e), code=1)
        except (ValueError, OSError) as e:  # InputError and OutputFolderError are ValueErrors
            _fail(str(e), code=2)
        _print_summary(index, out, None)

    @app.command("inspect")
    def inspect(
        folder: Annotated[Path, typer.Argument(help="shard folder holding index.json")],
        verify: Annotated[bool, typer.Option(help="check every shard's sha256, rows and tokens")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="print the index stats as JSON")] = False,
    ) -> None:
        """Show a shard folder's stats and fill rate, verify its checksums and list files that index.json does
        not list (exit 1 on a mismatch or an unlisted .arrow file)."""
        from packing.build import RANKS_DIR, TAILS_DIR
        from packing.format import ShardFormatError, read_index, unlisted_files, verify_shards
        from pipelines.pack_output import LOGS_DIR, RUN_FILE

        try:
            index = read_index(folder)
        except ShardFormatError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        problems = verify_shards(folder, index, progress=not as_json) if verify else None
        unlisted = unlisted_files(folder, index, bookkeeping=(RANKS_DIR, TAILS_DIR, LOGS_DIR, RUN_FILE))
        # a stale shard is picked up by `shard-*.arrow` globs of other readers: a problem; other files a note
        stale = [
            f"{folder / name}: an Arrow file that index.json does not list"
            for name in unlisted
            if name.endswith(".arrow")
        ]
        if stale:
            problems = [*(problems or []), *stale]
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
                "unlisted_files": unlisted,
            }
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_summary(index, folder, problems)
            others = [name for name in unlisted if not name.endswith(".arrow")]
            if others:
                typer.echo(
                    f"note: {len(others)} other file(s) not listed in index.json: {', '.join(others[:5])}"
                )
        if problems:
            raise typer.Exit(1)
