"""`longtrove demo`: the main job on the embedded sample corpus, with no network and no arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def print_summary(name: str, summary: Any) -> None:
    """A demo stage's summary mapping as a two-column table (nested mappings on one line)."""
    from rich.console import Console
    from rich.table import Table

    if not isinstance(summary, dict):
        typer.echo(f"{name}: {summary}")
        return
    table = Table(title=f"Demo {name}", show_header=False, title_justify="left")
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(str(key).replace("_", " "), str(value))
    Console().print(table)


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach this module's commands to the app."""

    @app.command()
    def demo(
        out: Annotated[
            Path, typer.Option(help="folder for the corpus, the curated documents and the work files")
        ] = Path("demo-out"),
        workers: Annotated[
            int | None, typer.Option(help="LocalCluster worker processes (default: one per core)")
        ] = None,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    ) -> None:
        """The main job, offline: curate a sample corpus made from Python's own documentation (plus planted
        duplicates and junk), pack it into shards, and build, run and report long-context tests on it."""
        import time

        from pipelines.commands.curate import print_counts
        from pipelines.demo import run_demo
        from pipelines.executor import RankFailedError

        start = time.perf_counter()
        try:
            ctx = run_demo(out, workers=workers, progress=progress, echo=typer.echo)
        except RankFailedError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: run the demo again to start over", err=True)
            raise typer.Exit(130) from None
        print_counts(ctx.counts, title="Demo curation")
        kept = ctx.counts[-1].kept if ctx.counts else 0
        typer.echo(f"curated documents: {ctx.curated_dir} ({kept} documents)")
        for name, summary in ctx.results.items():
            print_summary(name, summary)
        typer.echo(f"done in {time.perf_counter() - start:.1f}s")
