"""`longtrove curate RECIPE --dry-run`: what a recipe would do, without the network and without reading documents.

It validates the recipe, resolves named datasets from the built-in catalogue, builds the stages (nothing runs),
and estimates the data volume from the catalogue or from file sizes on local disks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BYTES_PER_TOKEN = 4.0  # a rough rule for English text with a ~100k-vocabulary tokenizer; an estimate only


@dataclass
class DryRun:
    """The plan of a recipe: its input, its stages and their rank counts, the volume, and warnings."""

    name: str
    input_lines: list[str] = field(default_factory=list)
    stages: list[tuple[str, int, list[str]]] = field(default_factory=list)
    volume: str = "unknown"
    warnings: list[str] = field(default_factory=list)


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _named_input(recipe: Any, plan: DryRun) -> None:
    from pipelines.datasets.catalog import resolve

    cfg = recipe.input
    source = resolve(cfg.dataset, cfg.config, local_copy=cfg.local_copy, data_files=cfg.data_files)
    entry = source.entry
    plan.input_lines += [
        f"dataset   {source.dataset} (config {source.config}) from the built-in catalogue",
        f"files     {source.root}/{source.data_files}",
        f"columns   text={source.text_key}, id={source.id_key}; other columns kept as metadata",
        f"access    {entry.access.licence if entry.access.gated else 'open'}"
        + (" (gated: accept the terms on the hub and set HF_TOKEN, or use a local copy)" if entry.access.gated
           else ""),
    ]
    if source.unverified:
        plan.warnings.append(f"catalogue facts not verified against the card: {', '.join(source.unverified)}")
    rows = source.rows
    if source.local_copy and Path(source.local_copy).is_dir():
        files = [p for p in Path(source.local_copy).glob(source.data_files) if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        plan.volume = f"{len(files)} local files, {_human(size, 'B')} (parquet, compressed)"
    elif rows:
        plan.volume = f"{_human(rows)} rows in this config (catalogue: {entry.configs[source.config].source})"
    elif entry.size and entry.size.tokens:
        plan.volume = (
            f"this config's size is not in the catalogue; the whole dataset holds {_human(entry.size.tokens)} tokens"
        )


def _path_input(recipe: Any, plan: DryRun) -> None:
    from fsspec.core import url_to_fs

    cfg = recipe.input
    total, files = 0, 0
    for path in cfg.paths:
        if "://" in path:
            plan.input_lines.append(f"{cfg.format:<9} {path} (remote: not listed in a dry run)")
            continue
        fs, fs_path = url_to_fs(path)
        if not fs.exists(fs_path):
            plan.warnings.append(f"input path {path!r} does not exist yet")
            plan.input_lines.append(f"{cfg.format:<9} {path} (missing)")
            continue
        found = [p for p in Path(path).rglob(cfg.glob or "*") if p.is_file()] if fs.isdir(fs_path) else [Path(path)]
        size = sum(p.stat().st_size for p in found)
        total += size
        files += len(found)
        plan.input_lines.append(f"{cfg.format:<9} {path} ({len(found)} files, {_human(size, 'B')})")
    if cfg.format == "huggingface":
        plan.input_lines.append(f"huggingface {cfg.dataset} {cfg.dataset_options}")
    if files:
        plan.volume = (
            f"{files} files, {_human(total, 'B')} on disk; about {_human(total / BYTES_PER_TOKEN)} tokens "
            f"if uncompressed English text ({BYTES_PER_TOKEN:g} bytes a token)"
        )


def plan_recipe(recipe: Any) -> DryRun:
    """The dry-run plan of a validated recipe (no network, no document read)."""
    from pipelines.curation.paths import check_curation_files
    from pipelines.stages import build_stages

    plan = DryRun(recipe.name)
    if recipe.input.format == "named":
        _named_input(recipe, plan)
    else:
        _path_input(recipe, plan)
    plan.warnings += check_curation_files(recipe)
    for target in recipe.shards:
        tokenizer = target.config.get("tokenizer", "")
        if tokenizer.startswith("/") and not Path(tokenizer).exists():
            plan.warnings.append(f"shards {target.name}: tokenizer {tokenizer!r} does not exist")
    for stage in build_stages(recipe):
        plan.stages.append((stage.name, stage.tasks, [type(step).__name__ for step in stage.pipeline]))
    return plan


def print_plan(plan: DryRun) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]Recipe {plan.name}[/bold]: valid")
    for line in plan.input_lines:
        console.print(f"  {line}", highlight=False)
    table = Table(title="Stages (nothing runs in a dry run)", title_justify="left")
    for column in ("stage", "ranks", "steps"):
        table.add_column(column)
    for name, tasks, steps in plan.stages:
        table.add_row(name, str(tasks), " → ".join(steps))
    console.print(table)
    console.print(f"estimated data volume: {plan.volume}", highlight=False)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
