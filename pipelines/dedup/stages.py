"""The recipe's dedup stages on the partitioned engine: no stage runs as one task.

    stage                 ranks        steps
    (filter's last step)  tasks        exact signatures split into `partitions` hash ranges | MinHash band keys
    exact-find            partitions   find the exact copies of one hash range
    exact-filter          tasks        drop them (datatrove's ExactDedupFilter) [-> MinHash band keys]
    minhash-buckets       partitions   documents sharing a band key become edges
    minhash-large-N       partitions   large-star pass, round N   } repeated until a round changes nothing
    minhash-small-N       partitions   small-star pass, round N   }
    minhash-removals      partitions   every node but its component's smallest, sent to its rank
    minhash-filter        tasks        drop them

The rounds are follow-ups (see ``Stage.follow_up``): each small-star stage, once done, adds the next round or the
removals stage, from the change counts its ranks recorded in their stats.
"""

from __future__ import annotations

from typing import Any

from pipelines.recipe import Recipe
from pipelines.stage import Stage

MAX_ROUNDS = 64


def partitions(recipe: Recipe) -> int:
    """Tasks of each partitioned dedup stage: the recipe's choice, else as many as the executor's tasks (at least 2)."""
    return recipe.dedup.partitions or max(2, recipe.executor.tasks)


def exact_signature_step(recipe: Recipe, config: Any) -> Any:
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature

    return ExactDedupSignature(f"{_work(recipe)}/exact/sigs", config=config, finder_workers=partitions(recipe))


def exact_find_stage(recipe: Recipe, config: Any) -> Stage:
    from pipelines.dedup.exact import ExactFindPartition

    work = _work(recipe)
    step = ExactFindPartition(f"{work}/exact/sigs", f"{work}/exact/dups", hash_config=config.hash_config)
    return Stage("exact-find", [step], partitions(recipe))


def minhash_signature_step(recipe: Recipe) -> Any:
    from pipelines.dedup.steps import MinhashBandSignature

    mh = recipe.dedup.minhash
    return MinhashBandSignature(
        f"{_work(recipe)}/minhash/bands",
        partitions=partitions(recipe),
        n_grams=mh.n_grams,
        num_buckets=mh.num_buckets,
        hashes_per_bucket=mh.hashes_per_bucket,
        seed=mh.seed,
    )


def minhash_stages(recipe: Recipe) -> list[Stage]:
    """minhash-buckets and the first round; the later rounds and the removals follow up from the first."""
    from pipelines.dedup.steps import MinhashBandMatch

    graph = f"{_work(recipe)}/minhash/graph"
    buckets = MinhashBandMatch(f"{_work(recipe)}/minhash/bands", f"{graph}/edges")
    return [Stage("minhash-buckets", [buckets], partitions(recipe)), _round(recipe, 1, f"{graph}/edges")]


def minhash_filter_step(recipe: Recipe) -> Any:
    from pipelines.dedup.steps import RemovalFilter

    return RemovalFilter(f"{_work(recipe)}/minhash/removed")


def _round(recipe: Recipe, number: int, source: str) -> Stage:
    from pipelines.dedup.steps import LARGE, SMALL, StarPass

    graph = f"{_work(recipe)}/minhash/graph"
    large_out, small_out = f"{graph}/large-{number:03d}", f"{graph}/small-{number:03d}"
    tasks = partitions(recipe)

    def after_large(large_stats: Any) -> list[Stage]:
        large_changes = _total(large_stats, "changes")

        def after_small(small_stats: Any) -> list[Stage]:
            if large_changes == 0 and _total(small_stats, "changes") == 0:
                return [_removals(recipe, small_out)]
            if number >= MAX_ROUNDS:
                raise RuntimeError(
                    f"stage minhash-small-{number:03d}: components did not converge in {MAX_ROUNDS} rounds"
                )
            return [_round(recipe, number + 1, small_out)]

        small = StarPass(SMALL, large_out, small_out)
        return [Stage(f"minhash-small-{number:03d}", [small], tasks, follow_up=after_small)]

    large = StarPass(LARGE, source, large_out)
    return Stage(f"minhash-large-{number:03d}", [large], tasks, follow_up=after_large)


def _removals(recipe: Recipe, source: str) -> Stage:
    from pipelines.dedup.steps import MinhashRemovals

    step = MinhashRemovals(source, f"{_work(recipe)}/minhash/removed", ranks=recipe.executor.tasks)
    return Stage("minhash-removals", [step], partitions(recipe))


def _total(stats: Any, key: str) -> int:
    """The sum of one counter over every step of a stage's merged stats."""
    total = 0
    for step in stats.stats:
        metric = step.stats.get(key)
        if metric is not None:
            total += int(metric.get("total", 0) if isinstance(metric, dict) else getattr(metric, "total", metric))
    return total


def _work(recipe: Recipe) -> str:
    return recipe.work_dir.rstrip("/")
