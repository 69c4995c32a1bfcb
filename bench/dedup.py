"""Benchmark: the partitioned MinHash dedup against datatrove's four MinHash stages, and exact dedup's find stage.

    .venv/bin/python bench/dedup.py [--bench-dir ../shared/bench] [--workers 2] [--tasks 4]

MinHash, on dedup-dev (real documents and planted near copies, truth.parquet):
  ours     the recipe's stages (filter + band keys, buckets, large/small-star rounds, removals, filter) run by the
           Dask executor on a LocalCluster of `--workers` processes; start-up of the cluster included in the total
  anchor   the same recipe with `dedup.engine: datatrove`: datatrove's MinhashDedupSignature, Buckets, Cluster and
           Filter, run by datatrove's LocalPipelineExecutor with `--workers` processes
Both stages 1 read the same parquet files and write the documents back as each rank's file. Printed: seconds and
docs/s per stage and total; recall (planted pairs with Jaccard >= 0.8 of which at least one document was
removed); false removals: removed documents outside planted clusters (singletons), and removed documents none of
whose planted cluster survived.
Signatures in one process: our batch path against datatrove's get_shingles + get_signature on the same texts,
with the number of documents whose signature differs (must be 0).
Exact: the whole set written twice (every document has a copy), signatures by datatrove's ExactDedupSignature;
datatrove's ExactFindDedups (one task) against the partitioned find (`--tasks` hash ranges, run one after the
other in this process); the removed sets must be equal.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports below)
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import tempfile
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"


def write_ranks(docs: pa.Table, folder: Path, tasks: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rank in range(tasks):
        pq.write_table(docs.take(np.arange(rank, len(docs), tasks)), folder / f"part-{rank:03d}.parquet")


def recipe_for(inputs: Path, out: Path, tasks: int, workers: int, engine: str):
    from pipelines.recipe import parse_recipe

    return parse_recipe(
        {
            "input": {"format": "parquet", "paths": [str(inputs)], "glob": "*.parquet"},
            "dedup": {"engine": engine, "exact": {"enabled": False}, "partitions": tasks},
            "output": {"path": str(out / "curated"), "work_dir": str(out / "work"), "compression": None},
            "executor": {"tasks": tasks, "workers": workers, "skip_completed": False},
        }
    )


def run_ours(recipe, workers: int) -> tuple[list[tuple[str, float]], float]:
    """The recipe on a fresh LocalCluster, as `longtrove curate` runs it, each stage timed; and the total with
    start-up."""
    from pipelines.executor import dask_client
    from pipelines.runner import run_recipe

    start = time.perf_counter()
    times = []
    with dask_client(workers=workers) as client:
        times.append(("cluster start", time.perf_counter() - start))
        run_recipe(
            recipe,
            client=client,
            progress=False,
            on_stage=lambda stage, stats, seconds: times.append((stage.name, seconds)),
        )
        total = time.perf_counter() - start
    return times, total


def run_datatrove(recipe) -> tuple[list[tuple[str, float]], float]:
    from pipelines.runner import make_executors
    from pipelines.stages import build_stages

    stages = build_stages(recipe)
    executors = make_executors(recipe, stages, kind="local")
    times = []
    start = time.perf_counter()
    for stage, executor in zip(stages, executors, strict=True):
        executor.depends = None
        t0 = time.perf_counter()
        executor.run()
        times.append((stage.name, time.perf_counter() - t0))
    return times, time.perf_counter() - start


def quality(curated: Path, docs: pa.Table, truth: pa.Table) -> tuple[float, int, int, int]:
    """Recall on planted pairs with Jaccard >= 0.8; removed documents of singleton clusters (never planted);
    removed documents none of whose cluster survived; documents removed."""
    kept = set(pq.read_table(sorted(curated.glob("*.parquet")), columns=["id"]).column("id").to_pylist())
    removed = set(docs.column("id").to_pylist()) - kept
    pairs = truth.filter(pa.compute.greater_equal(truth.column("jaccard"), 0.8))
    a_ids, b_ids = pairs.column("a").to_pylist(), pairs.column("b").to_pylist()
    caught = sum(a in removed or b in removed for a, b in zip(a_ids, b_ids, strict=True))
    cluster = dict(zip(docs.column("id").to_pylist(), docs.column("cluster").to_pylist(), strict=True))
    sizes = Counter(cluster.values())
    surviving = {cluster[i] for i in kept}
    outside = sum(sizes[cluster[i]] == 1 for i in removed)
    lost = sum(cluster[i] not in surviving for i in removed)
    return caught / max(1, len(pairs)), outside, lost, len(removed)


def print_stages(label: str, times: list[tuple[str, float]], total: float, n_docs: int) -> None:
    for name, seconds in times:
        print(f"  {label:9s} {name:22s} {seconds:8.2f} s  {n_docs / seconds:10.0f} docs/s")
    print(f"  {label:9s} {'TOTAL':22s} {total:8.2f} s  {n_docs / total:10.0f} docs/s")


def signature_equality(texts: list[str], repeats: int = 1) -> None:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from pipelines.dedup.minhash import permutations, signatures
    from pipelines.dedup.shingles import Shingler

    reference = MinhashDedupSignature("memory://bench", config=MinhashConfig())
    shingler, (a, b) = Shingler(), permutations(reference.num_hashes, 1)
    shingler.shingles(texts[:50])  # warm-up: loads the stored rules (spaCy only if they leave a piece open)
    reference.get_shingles(texts[0])
    t0 = time.perf_counter()
    ours = []
    for i in range(0, len(texts), 256):
        batch = shingler.shingles(texts[i : i + 256])
        sigs = signatures(batch.hashes, batch.offsets, a, b)
        rows = iter(sigs)
        ours += [next(rows) if n else None for n in np.diff(batch.offsets)]
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = []
    for text in texts:
        shingles = reference.get_shingles(text)
        theirs.append(np.concatenate(reference.get_signature(shingles)) if shingles.size else None)
    theirs_s = time.perf_counter() - t0
    differ = sum(
        (x is None) != (y is None) or (x is not None and not np.array_equal(x, y))
        for x, y in zip(ours, theirs, strict=True)
    )
    print(
        f"signatures, one process, {len(texts)} docs: ours {len(texts) / ours_s:.0f} docs/s, datatrove "
        f"{len(texts) / theirs_s:.0f} docs/s, ratio {theirs_s / ours_s:.1f}x; signatures that differ: {differ}"
    )


def exact_bench(docs: pa.Table, root: Path, tasks: int, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.readers import ParquetReader

    from pipelines.dedup.exact import ExactFindPartition
    from pipelines.stages import document_text

    doubled = pa.concat_tables([docs, docs])
    write_ranks(doubled, root / "in", tasks)
    config = ExactDedupConfig(content_getter=document_text)
    runs = {}
    for label, finders in (("datatrove", 1), ("ours", tasks)):
        sigs, dups = root / label / "sigs", root / label / "dups"
        LocalPipelineExecutor(
            [
                ParquetReader(str(root / "in"), glob_pattern="*.parquet"),
                ExactDedupSignature(str(sigs), config=config, finder_workers=finders),
            ],
            tasks=tasks,
            workers=workers,
            logging_dir=str(root / label / "logs-sig"),
        ).run()
        # the find stage in this process, rank after rank: its work, free of process start-up
        t0 = time.perf_counter()
        if finders == 1:
            ExactFindDedups(str(sigs), str(dups), config=config).run(None, 0, 1)
            slowest = time.perf_counter() - t0
        else:
            slowest = 0.0
            for partition in range(finders):
                t1 = time.perf_counter()
                list(ExactFindPartition(str(sigs), str(dups), config.hash_config).run(None, partition, finders))
                slowest = max(slowest, time.perf_counter() - t1)
        seconds = time.perf_counter() - t0
        removed = set()
        for path in dups.rglob("*.c4_dup"):
            removed |= {(path.name, int(d)) for d in np.fromfile(path, dtype="<u4")}
        runs[label] = (seconds, slowest, removed)
    (dt_s, _, dt_removed), (our_s, our_slowest, our_removed) = runs["datatrove"], runs["ours"]
    print(
        f"exact find, {len(doubled)} docs: datatrove (1 task) {dt_s:.3f} s; ours {our_s:.3f} s over {tasks} tasks "
        f"(slowest task {our_slowest:.3f} s), ratio of work {dt_s / our_s:.1f}x, of the longest task "
        f"{dt_s / our_slowest:.1f}x; removed {len(our_removed)} vs {len(dt_removed)}, "
        f"same set: {our_removed == dt_removed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-dir", type=Path, default=BENCH, help="the shared bench folder (holds dedup-dev/)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both engines")
    parser.add_argument("--tasks", type=int, default=4, help="ranks of the document stages and partitions")
    parser.add_argument("--skip", choices=["minhash", "signatures", "exact"], nargs="*", default=[])
    args = parser.parse_args()

    data = args.bench_dir / "dedup-dev"
    if not (data / "docs.parquet").is_file():
        sys.exit(f"no dedup-dev set at {data} (pass --bench-dir)")
    docs = pq.read_table(data / "docs.parquet")
    truth = pq.read_table(data / "truth.parquet")
    n = len(docs)
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        root = Path(tmp)
        if "minhash" not in args.skip:
            write_ranks(docs, root / "in", args.tasks)
            theirs = recipe_for(root / "in", root / "datatrove", args.tasks, args.workers, "datatrove")
            ours = recipe_for(root / "in", root / "ours", args.tasks, args.workers, "longtrove")
            dt_times, dt_total = run_datatrove(theirs)
            our_times, our_total = run_ours(ours, args.workers)
            print(f"MinHash dedup, {n} docs, {args.workers} workers, {args.tasks} tasks/partitions")
            print_stages("datatrove", dt_times, dt_total, n)
            print_stages("ours", our_times, our_total, n)
            dt_stage1, our_stage1 = dt_times[0][1], our_times[1][1]
            print(
                f"stage 1 (read, write, signatures): ratio {dt_stage1 / our_stage1:.1f}x; "
                f"whole MinHash dedup, start-up included: ratio {dt_total / our_total:.1f}x"
            )
            for label, recipe in (("datatrove", theirs), ("ours", ours)):
                recall, outside, lost, removed = quality(Path(recipe.output.path), docs, truth)
                print(
                    f"  {label:9s} recall {recall:.4f}  removed {removed}, of which outside planted clusters "
                    f"{outside}, from clusters of which nothing survived {lost}"
                )
        if "signatures" not in args.skip:
            signature_equality(docs.column("text").to_pylist())
        if "exact" not in args.skip:
            exact_bench(docs, root / "exact", args.tasks, args.workers)


if __name__ == "__main__":
    main()
