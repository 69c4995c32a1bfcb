"""`longtrove datasets`: the open datasets recipes and `pack` know by name, from the built-in catalogue."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach `datasets` to the app."""

    @app.command("datasets")
    def datasets(
        name: Annotated[str | None, typer.Argument(help="one dataset: its configs and where each fact came from")] = None,
    ) -> None:
        """List the known open datasets: configs, text and id columns, size and licence gate (no network)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from pipelines.datasets.catalog import describe_rows, load_catalog

        console = Console()
        if name is None:
            table = Table(title="Named datasets (use as input: {dataset: NAME, config: CONFIG} or pack NAME:CONFIG)")
            for column in ("dataset", "configs", "text", "id", "tokens", "gate"):
                table.add_column(column, no_wrap=column in ("dataset", "configs"))
            for row in describe_rows():
                tokens = f"{row['tokens'] / 1e9:,.0f}B" if row["tokens"] else "?"
                access = row["entry"].access
                gate = f"gated: {access.licence}" if access.gated else f"open: {access.licence}"
                table.add_row(row["dataset"], "\n".join(row["configs"]), row["text"] or "-", row["id"], tokens, gate)
            console.print(table)
            console.print("'?' marks a fact the catalogue could not verify; `longtrove datasets NAME` shows sources.")
            return
        catalog = load_catalog()
        if name not in catalog:
            typer.secho(f"error: {name!r} is not in the catalogue (known: {', '.join(catalog)})", fg="red", err=True)
            raise typer.Exit(2)
        entry = catalog[name]
        console.print(f"[bold]{name}[/bold]: {entry.description}", highlight=False)
        gate = entry.access
        console.print(f"  access: {gate.licence} ({'gated' if gate.gated else 'open'}); terms {gate.terms}",
                      highlight=False)
        console.print(f"    source: {escape(gate.source)}", highlight=False)
        for what, fact in (("text column", entry.text_column), ("id column", entry.id_column),
                           ("file layout", entry.layout)):
            value = fact.name or fact.pattern
            mark = "" if fact.verified else " [yellow](unverified)[/yellow]"
            console.print(f"  {what}: {value}{mark}", highlight=False)
            console.print(f"    source: {escape(fact.source)}", highlight=False)
        if entry.size:
            console.print(f"  size: tokens {entry.size.tokens or '?':.4g}, rows {entry.size.rows or '?'}", highlight=False)
            console.print(f"    source: {escape(entry.size.source)}", highlight=False)
        for config, cfg in entry.configs.items():
            extra = " (metadata only: " + ", ".join(cfg.metadata_columns) + ")" if cfg.metadata_only else ""
            mark = "" if cfg.verified else " [yellow](unverified)[/yellow]"
            console.print(f"  config {config}{extra}{mark}: {escape(cfg.source)}", highlight=False)
        from pipelines.datasets.catalog import source_legend

        text = entry.model_dump_json()
        console.print("sources:")
        for key, where in source_legend().items():
            if f"[{key}]" in text:
                console.print(f"  {escape(f'[{key}]')} {where}", highlight=False)
