"""Running a recipe's stages on Dask (or datatrove's local executor) and reading what they did."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.recipe import Recipe
from pipelines.stages import Stage, build_stages


@dataclass
class StepCount:
    """What one step did to the documents that reached it."""

    stage: str
    step: str
    seen: int
    kept: int
    dropped: int
    detail: dict[str, int] = field(default_factory=dict)


def make_executors(
    recipe: Recipe,
    stages: list[Stage] | None = None,
    *,
    kind: Literal["dask", "local"] = "dask",
    client: Any = None,
    progress: bool = True,
) -> list:
    """One executor per stage, each depending on the one before, logging under ``<work_dir>/logs/<stage>``."""
    stages = stages if stages is not None else build_stages(recipe)
    open_ended = [stage.name for stage in stages if stage.follow_up is not None]
    if open_ended:
        raise ValueError(
            f"stage {open_ended[0]!r} decides at run time what runs after it: run the recipe with run_recipe, "
            "or set dedup.engine: datatrove for a fixed list of stages"
        )
    logs = f"{recipe.work_dir.rstrip('/')}/logs"
    executors: list = []
    for stage in stages:
        if kind == "dask":
            from pipelines.executor import DaskPipelineExecutor

            executor = DaskPipelineExecutor(
                stage.pipeline,
                tasks=stage.tasks,
                logging_dir=f"{logs}/{stage.name}",
                client=client,
                scheduler=recipe.executor.scheduler,
                workers=recipe.executor.workers,
                depends=executors[-1] if executors else None,
                skip_completed=recipe.executor.skip_completed,
                name=stage.name,
                progress=progress,
            )
        else:
            from datatrove.executor import LocalPipelineExecutor

            executor = LocalPipelineExecutor(
                stage.pipeline,
                tasks=stage.tasks,
                workers=min(stage.tasks, recipe.executor.workers or os.cpu_count() or 1),
                logging_dir=f"{logs}/{stage.name}",
                depends=executors[-1] if executors else None,
                skip_completed=recipe.executor.skip_completed,
            )
        executors.append(executor)
    return executors


def step_counts(stage: str, stats: Any) -> list[StepCount]:
    """Kept/dropped counts for the steps of one stage's merged datatrove stats that keep or drop documents."""
    rows = []
    for step in stats.stats:
        label = _step_label(step.name)
        counts = {key: _metric_total(metric) for key, metric in step.stats.items() if key != "doc_len"}
        bad = {k.removeprefix("bad_input/"): v for k, v in counts.items() if k.startswith("bad_input/")}
        if "dropped" in counts or "forwarded" in counts:  # filters, dedup filters
            reasons = {k.removeprefix("dropped_"): v for k, v in counts.items() if k.startswith("dropped_")}
            dropped = counts.get("dropped", 0)
            kept = counts.get("forwarded", 0)
            rows.append(StepCount(stage, label, kept + dropped, kept, dropped, reasons))
        elif "same rank" in label:  # reading back a stage's own output
            continue
        elif "documents" in counts or bad:  # readers
            kept = counts.get("documents", 0)
            dropped = sum(bad.values())
            rows.append(StepCount(stage, label, kept + dropped, kept, dropped, bad))
    return rows


def _step_label(name: str) -> str:
    """ "🔻 - FILTER: 👯 Gopher Repetition" -> "Gopher Repetition": datatrove's names without type and emoji."""
    name = str(name).rpartition(": ")[2]
    return name.lstrip("".join(ch for ch in name if not ch.isascii()) + " ").strip() or str(name)


def _metric_total(metric: Any) -> int:
    # stats read back from disk hold plain numbers or dicts, fresh ones hold MetricStats
    if isinstance(metric, dict):
        return int(metric.get("total", 0))
    return int(getattr(metric, "total", metric))


def run_recipe(
    recipe: Recipe,
    *,
    client: Any = None,
    progress: bool = True,
    stages: list[Stage] | None = None,
    on_stage: Callable[[Stage, Any, float], None] | None = None,
) -> list[StepCount]:
    """Run every stage of the recipe (or `stages` built from it) on Dask, one cluster for all stages, and return
    per-step counts. Stages run in order; a stage with a ``follow_up`` adds the stages it returns after itself.
    ``on_stage(stage, stats, seconds)`` is called after each stage (the benchmarks time stages with it).
    """
    from pipelines.executor import dask_client

    pending = list(stages) if stages is not None else build_stages(recipe)
    rows: list[StepCount] = []
    with dask_client(client, recipe.executor.scheduler, recipe.executor.workers) as active:
        while pending:
            stage = pending.pop(0)
            follow_up, stage.follow_up = stage.follow_up, None
            [executor] = make_executors(recipe, [stage], client=active, progress=progress)
            start = time.perf_counter()
            stats = executor._run_with_client(active)
            if on_stage is not None:
                on_stage(stage, stats, time.perf_counter() - start)
            rows += step_counts(stage.name, stats)
            if follow_up is not None:
                pending[:0] = follow_up(stats)
    return rows


def count_curated(path: str) -> int:
    """Documents in the curated parquet files under `path` (local or fsspec URL), from the files' footers."""
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(path)
    if not fs.isdir(root):
        return 0
    total = 0
    for file in fs.glob(f"{root.rstrip('/')}/**/*.parquet"):
        with fs.open(file, "rb") as f:
            total += pq.read_metadata(f).num_rows
    return total


def read_curated(path: str | os.PathLike) -> list[dict]:
    """The curated documents of a finished run, in rank order (for checks and tests)."""
    import pyarrow.parquet as pq

    files = sorted(Path(path).glob("*.parquet"))
    rows: list[dict] = []
    for file in files:
        rows += pq.read_table(file).to_pylist()
    return rows
