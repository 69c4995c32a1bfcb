"""Benchmark: the default curation recipe on the shared bench corpus, on Dask and on datatrove's local executor.

Both run the same recipe (filters, exact dedup, MinHash dedup) with the same number of worker processes; the
figure is input documents per second over the whole recipe, wall clock, cluster start-up included. Ours runs the
recipe as it is (the fast filters, the partitioned dedup stages); the anchor runs it with ``filter_engine:
datatrove`` and ``dedup.engine: datatrove`` (datatrove's own classes) on datatrove's local executor. The documents each run keeps are compared: after the filter stage (must
be none that differ) and at the end, where any further difference comes from dedup.

    python bench/curate.py                 # the whole corpus
    python bench/curate.py --limit 500     # about 500 documents per rank, for a quick check
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def recipe_for(corpus: Path, out: Path, tasks: int, workers: int, limit: int, engine: str = "longtrove"):
    """The default recipe; `engine` "longtrove" (ours: fast filters, partitioned dedup) or "datatrove" (its own
    filter and dedup classes, for the anchor)."""
    from pipelines.recipe import DEFAULT_RECIPE, load_recipe

    overrides = {
        "input": {"format": "parquet", "paths": [str(corpus)], "glob": None, "limit": limit},
        "output": {"path": str(out / "curated"), "work_dir": str(out / "work")},
        "executor": {"tasks": tasks, "workers": workers, "skip_completed": False},
        "filter_engine": "fast" if engine == "longtrove" else "datatrove",
        "dedup": {"engine": engine},
    }
    return load_recipe(DEFAULT_RECIPE, overrides=overrides)


def documents_read(rows) -> int:
    return sum(r.seen for r in rows if r.stage == "filter" and "checked" in r.step)


def run_dask(recipe) -> tuple[float, int, int]:
    from pipelines.runner import run_recipe

    start = time.perf_counter()
    rows = run_recipe(recipe, progress=False)
    return time.perf_counter() - start, documents_read(rows), rows[-1].kept


def run_local(recipe) -> tuple[float, int, int]:
    import json

    from datatrove.utils.stats import PipelineStats

    from pipelines.runner import make_executors, step_counts
    from pipelines.stages import build_stages

    stages = build_stages(recipe)
    executors = make_executors(recipe, stages, kind="local")
    start = time.perf_counter()
    executors[-1].run()  # runs its dependency chain first
    elapsed = time.perf_counter() - start
    rows = []
    for stage, executor in zip(stages, executors, strict=True):
        with executor.logging_dir.open("stats.json", "rt") as f:
            rows += step_counts(stage.name, PipelineStats.from_json(json.load(f)))
    return elapsed, documents_read(rows), rows[-1].kept


def documents(folder: Path) -> set[tuple[str, str]] | None:
    """(id, text) of every document in a folder of parquet outputs; None if the stage wrote none there."""
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    found: set[tuple[str, str]] = set()
    for file in files:
        table = pq.read_table(file, columns=["id", "text"])
        found |= set(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    return found


def differing(a: set | None, b: set | None) -> int | None:
    """Documents kept by one run and not the other (or kept with another text), counted once per id."""
    if a is None or b is None:
        return None
    return len({doc_id for doc_id, _ in a ^ b})


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.parquet"))
    if names != sorted(p.name for p in b.glob("*.parquet")):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=BENCH, help="the shared bench folder (holds corpus/)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both executors")
    parser.add_argument("--tasks", type=int, default=8, help="ranks per stage")
    parser.add_argument("--limit", type=int, default=-1, help="documents per rank (-1: all)")
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    args = parser.parse_args()

    corpus = args.bench_dir / "corpus"
    if not corpus.is_dir():
        sys.exit(f"no bench corpus at {corpus} (pass --bench-dir)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-curate-"))
    try:
        dask_recipe = recipe_for(corpus, root / "dask", args.tasks, args.workers, args.limit)
        local_recipe = recipe_for(corpus, root / "local", args.tasks, args.workers, args.limit, "datatrove")
        dask_s, dask_docs, dask_kept = run_dask(dask_recipe)
        local_s, local_docs, local_kept = run_local(local_recipe)
        identical = same_files(Path(dask_recipe.output.path), Path(local_recipe.output.path))
        after_filters = differing(
            documents(Path(dask_recipe.work_dir) / "filtered"),
            documents(Path(local_recipe.work_dir) / "filtered"),
        )
        curated = differing(
            documents(Path(dask_recipe.output.path)), documents(Path(local_recipe.output.path))
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    dask_rate, local_rate = dask_docs / dask_s, local_docs / local_s
    print(f"corpus: {corpus}  tasks={args.tasks} workers={args.workers} limit/rank={args.limit}")
    print(
        f"ours   DaskPipelineExecutor, fast filters + partitioned dedup: {dask_docs} docs in {dask_s:.1f}s = {dask_rate:.1f} docs/s (kept {dask_kept})"
    )
    print(
        f"anchor LocalPipelineExecutor, datatrove filters + dedup:        {local_docs} docs in {local_s:.1f}s = {local_rate:.1f} docs/s (kept {local_kept})"
    )
    print(f"ratio dask/local: {dask_rate / local_rate:.2f}x   curated outputs byte-identical: {identical}")
    print(
        f"documents that differ: after the filters {after_filters} (must be 0), curated {curated}"
        + (f" ({curated - after_filters} from dedup)" if None not in (curated, after_filters) else "")
    )


if __name__ == "__main__":
    main()
