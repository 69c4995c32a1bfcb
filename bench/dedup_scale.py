"""Scale benchmark: full dedup (exact + MinHash, partitioned stages) at two corpus sizes on a LocalCluster.

    .venv/bin/python bench/dedup_scale.py [--sizes 100000 1000000] [--workers 2] [--tasks 8] [--seed 0]

The corpus is synthetic and seeded: short documents (30-90 words drawn from a 50,000-word vocabulary), with
planted exact copies and near-duplicate clusters of varied sizes (2 to 50 documents, each a word away from
the cluster's first) and long chains (20 to 300 documents, each a word away from the one before, so the ends
of a chain are far apart and only the components stage joins them). For each size it prints the seconds,
docs/s and per-core docs/s of each stage, the peak RSS of each worker process, the documents removed against
those planted, and the ratio of the two sizes (linear growth: time ratio close to the size ratio).
Then the extrapolation to --target documents: core-hours per stage and the partitions that keep a task under
--task-memory GB, from the measured memory per document of a partition.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports below)
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class Planted:
    exact_copies: int = 0
    near_copies: int = 0  # documents after the first of a cluster or chain


def synthetic_corpus(size: int, seed: int) -> tuple[list[str], Planted]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(50_000)])
    planted = Planted()
    texts: list[str] = []

    def words(n: int) -> np.ndarray:
        return rng.integers(0, len(vocab), n)

    def edit(ids: np.ndarray, k: int) -> np.ndarray:
        ids = ids.copy()
        ids[rng.integers(0, len(ids), k)] = words(k)
        return ids

    while len(texts) < size:
        roll = rng.random()
        base = words(int(rng.integers(30, 90)))
        group = [base]
        if roll < 0.02:  # exact copy
            texts += [" ".join(vocab[base])] * 2
            planted.exact_copies += 1
            continue
        if roll < 0.07:  # near-duplicate cluster around one document
            group += [edit(base, 1) for _ in range(int(rng.choice([1, 1, 1, 2, 3, 5, 9, 49])))]
        elif roll < 0.072:  # a long chain: each a word from the one before
            for _ in range(int(rng.integers(20, 300))):
                group.append(edit(group[-1], 1))
        planted.near_copies += len(group) - 1
        texts += [" ".join(vocab[ids]) for ids in group]
    return texts[:size], planted


def worker_peak_rss(client) -> list[float]:
    def peak() -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB on Linux

    return sorted(client.run(peak).values())


def run_size(size: int, args, root: Path) -> dict:
    from pipelines.executor import dask_client
    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe, step_counts

    t0 = time.perf_counter()
    texts, planted = synthetic_corpus(size, args.seed)
    inputs = root / f"in-{size}"
    inputs.mkdir(parents=True)
    order = np.arange(size)
    for rank in range(args.tasks):
        rows = order[rank :: args.tasks]
        table = pa.table({"id": [f"d{i}" for i in rows], "text": [texts[i] for i in rows]})
        pq.write_table(table, inputs / f"part-{rank:03d}.parquet")
    del texts
    print(f"\n{size} documents generated in {time.perf_counter() - t0:.1f} s: {planted}")
    recipe = parse_recipe(
        {
            "input": {"format": "parquet", "paths": [str(inputs)], "glob": "*.parquet"},
            "dedup": {"partitions": args.partitions or args.tasks},
            "output": {"path": str(root / f"out-{size}"), "compression": None},
            "executor": {"tasks": args.tasks, "workers": args.workers},
        }
    )
    times: dict[str, float] = {}
    start = time.perf_counter()
    with dask_client(workers=args.workers) as client:
        kept = None

        def timed(stage, stats, seconds: float) -> None:
            nonlocal kept
            group = "minhash-rounds" if stage.name.startswith(("minhash-large", "minhash-small")) else stage.name
            times[group] = times.get(group, 0.0) + seconds
            if stage.name == "minhash-filter":
                kept = next(row.kept for row in step_counts(stage.name, stats) if "MinHash" in row.step)

        run_recipe(recipe, client=client, progress=False, on_stage=timed)
        rss = worker_peak_rss(client)
    total = time.perf_counter() - start
    print(f"{'stage':18s} {'seconds':>9s} {'docs/s':>10s} {'docs/s/core':>12s}")
    for name, seconds in times.items():
        print(f"{name:18s} {seconds:9.2f} {size / seconds:10.0f} {size / seconds / args.workers:12.0f}")
    print(f"{'TOTAL':18s} {total:9.2f} {size / total:10.0f} {size / total / args.workers:12.0f}")
    removed = size - (kept or 0)
    print(
        f"removed {removed} (planted: {planted.exact_copies} exact copies + {planted.near_copies} near copies = "
        f"{planted.exact_copies + planted.near_copies}); peak RSS per worker: "
        + ", ".join(f"{r:.0f} MB" for r in rss)
    )
    return {"size": size, "times": times, "total": total, "rss": max(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=8, help="ranks of the document stages")
    parser.add_argument("--partitions", type=int, default=None, help="dedup partitions (default: --tasks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=8.8e9, help="documents to extrapolate to")
    parser.add_argument("--task-memory", type=float, default=8.0, help="GB a task may use")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dedup-scale-") as tmp:
        results = [run_size(size, args, Path(tmp)) for size in args.sizes]
    if len(results) < 2:
        return
    small, large = results[0], results[-1]
    ratio = large["size"] / small["size"]
    print(f"\nratio of sizes {ratio:.0f}x: total time {large['total'] / small['total']:.1f}x")
    for name in large["times"]:
        print(f"  {name:18s} time {large['times'][name] / small['times'][name]:.1f}x")
    partitions = args.partitions or args.tasks
    mb_per_doc = max(1e-9, (large["rss"] - small["rss"]) / (large["size"] - small["size"]))
    base_mb = max(0.0, small["rss"] - mb_per_doc * small["size"])
    per_task_doc_mb = mb_per_doc * partitions  # a task holds 1/partitions of the documents
    needed = math.ceil(args.target * per_task_doc_mb / max(1.0, args.task_memory * 1024 - base_mb))
    print(f"\nextrapolated to {args.target:.3g} documents (per-core rates of the {large['size']} run):")
    for name, seconds in large["times"].items():
        per_core = large["size"] / seconds / args.workers
        print(f"  {name:18s} {per_core:10.0f} docs/s/core  {args.target / per_core / 3600:10.0f} core-hours")
    per_core = large["size"] / large["total"] / args.workers
    print(f"  {'TOTAL':18s} {per_core:10.0f} docs/s/core  {args.target / per_core / 3600:10.0f} core-hours")
    print(
        f"  peak RSS grows {mb_per_doc * 1e6:.0f} MB per million documents at {partitions} partitions "
        f"(base {base_mb:.0f} MB): {needed} partitions keep a task under {args.task_memory:.0f} GB"
    )


if __name__ == "__main__":
    main()
