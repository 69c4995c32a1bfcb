"""`longtrove export megatron`: shard folders to Megatron-LM's indexed dataset (.bin/.idx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach the `export` group and its `megatron` command to the app."""
    export_app = typer.Typer(help="Export shard folders for other trainers.", no_args_is_help=True)
    app.add_typer(export_app, name="export")

    @export_app.command("megatron")
    def megatron(
        shards: Annotated[list[Path], typer.Argument(help="finished shard folders (several make a blend)")],
        out: Annotated[Path, typer.Option(help="output PREFIX: writes PREFIX.bin and PREFIX.idx")],
        mode: Annotated[
            str,
            typer.Option(help="documents: one Megatron document per source document; packed: one per row"),
        ] = "documents",
        weight: Annotated[
            list[float] | None,
            typer.Option(help="blend weight per folder, in order (default: each folder's token count)"),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="print a JSON summary as the last line")
        ] = False,
    ) -> None:
        """Write Megatron's PREFIX.bin/.idx; for several folders, print the --data-path blend string."""
        from packing.format import ShardFormatError
        from packing.megatron_export import data_path_string, export_megatron

        if mode not in ("documents", "packed"):
            raise typer.BadParameter(f"--mode must be documents or packed, got {mode!r}")
        if weight and len(weight) != len(shards):
            raise typer.BadParameter(f"{len(weight)} --weight values for {len(shards)} shard folders")
        if weight and any(not w > 0 for w in weight):
            raise typer.BadParameter(f"--weight values must be positive, got {weight}")
        prefixes = (
            [out]
            if len(shards) == 1
            else [
                out.with_name(f"{out.name}-{i:02d}-{folder.resolve().name}")
                for i, folder in enumerate(shards)
            ]
        )
        exports = []
        for folder, prefix in zip(shards, prefixes, strict=True):
            try:
                exports.append(export_megatron(folder, prefix, mode=mode))  # type: ignore[arg-type]
            except (ShardFormatError, OSError, ValueError) as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(1) from e
            done = exports[-1]
            typer.echo(
                f"{folder} -> {done.prefix}.bin/.idx: {done.sequences:,} sequences, {done.tokens:,} tokens "
                f"({done.mode}, {done.dtype})"
            )
        weights = list(weight) if weight else [float(e.tokens) for e in exports]
        data_path = data_path_string(exports, weights)
        typer.echo(f"--data-path {data_path}")
        if as_json:
            summary = {
                "exports": [
                    {"prefix": str(e.prefix), "sequences": e.sequences, "tokens": e.tokens, "mode": e.mode}
                    for e in exports
                ],
                "data_path": data_path,
            }
            typer.echo(json.dumps(summary))
