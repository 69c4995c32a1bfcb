"""`longtrove curate RECIPE.yaml`: run a curation recipe on Dask and print what each step kept and dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def print_counts(rows: list[Any], title: str = "Curation") -> None:
    """A table of per-step kept/dropped counts (rows are pipelines.runner.StepCount)."""
    from rich.console import Console
    from rich.table import Table

    # one reason a line, never cut: on a narrow terminal the names wrap, the reasons keep their width
    reasons = [
        [f"{k}: {v:,}" for k, v in sorted(row.detail.items(), key=lambda kv: -kv[1])[:4]] for row in rows
    ]
    widest = max((len(line) for lines in reasons for line in lines), default=11)
    table = Table(title=title)
    for column in ("stage", "step", "in", "kept", "dropped"):
        numeric = column in ("in", "kept", "dropped")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    table.add_column("why dropped", min_width=min(widest, 48), no_wrap=True, overflow="fold")
    for row, lines in zip(rows, reasons, strict=True):
        table.add_row(
            row.stage, row.step, f"{row.seen:,}", f"{row.kept:,}", f"{row.dropped:,}", "\n".join(lines)
        )
    Console(stderr=False).print(table)


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach this module's commands to the app."""

    @app.command()
    def curate(
        recipe: Annotated[Path, typer.Argument(help="YAML recipe (see pipelines/recipes/default.yaml)")],
        output: Annotated[str | None, typer.Option(help="override output.path")] = None,
        tasks: Annotated[int | None, typer.Option(help="override executor.tasks (ranks per stage)")] = None,
        workers: Annotated[
            int | None, typer.Option(help="override executor.workers (LocalCluster processes)")
        ] = None,
        scheduler: Annotated[str | None, typer.Option(help="address of a running Dask scheduler")] = None,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="validate and print stages, ranks and data volume; run nothing")
        ] = False,
    ) -> None:
        """Run a curation recipe (read, filter, exact and MinHash dedup, write parquet) on Dask."""
        from pipelines.executor import RankFailedError
        from pipelines.recipe import RecipeError, load_recipe
        from pipelines.runner import count_curated, run_recipe

        overrides: dict[str, Any] = {}
        if output:
            overrides.setdefault("output", {})["path"] = str(Path(output).resolve())
        for key, value in (("tasks", tasks), ("workers", workers), ("scheduler", scheduler)):
            if value is not None:
                overrides.setdefault("executor", {})[key] = value
        if dry_run:
            from pipelines.curation.dryrun import plan_recipe, print_plan

            try:  # no path checks, no network: the plan says what is missing
                print_plan(plan_recipe(load_recipe(recipe, overrides=overrides, check_paths=False)))
            except RecipeError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None
            return
        try:
            parsed = load_recipe(recipe, overrides=overrides)
            rows = run_recipe(parsed, progress=progress)
        except (RecipeError, RankFailedError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2 if isinstance(e, RecipeError) else 1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: rerun the same command to resume (finished ranks are kept)", err=True)
            raise typer.Exit(130) from None
        print_counts(rows, title=f"Curation: {parsed.name}")
        from pipelines.curation.stages import curates_documents, finished_outputs

        documents = count_curated(parsed.output.path) if curates_documents(parsed) else None
        if documents == 0:  # nothing to hand on is a failure, whatever the steps say
            typer.echo(
                f"error: no document was curated into {parsed.output.path}: every one was dropped "
                "(see 'why dropped' above)",
                err=True,
            )
            raise typer.Exit(1)
        for line in finished_outputs(parsed, documents):
            typer.echo(line)
