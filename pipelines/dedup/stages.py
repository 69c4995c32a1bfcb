"""The recipe's dedup stages, for either engine; ``pipelines.stages`` places them between its own.

Partitioned engine (the default), no stage runs as one task:

    stage                 ranks        steps
    (filter's last step)  tasks        exact signatures split into `partitions` hash ranges | MinHash band keys
    exact-find            partitions   find the exact copies of one hash range
    exact-filter          tasks        drop them (datatrove's ExactDedupFilter) [-> MinHash band keys]
    minhash-buckets       partitions   documents sharing a band key become edges
    minhash-large-NNN     partitions   large-star pass, round NNN  } repeated until a round changes nothing
    minhash-small-NNN     partitions   small-star pass, round NNN  }
    minhash-removals      partitions   every node but its component's smallest, sent to its rank
    minhash-filter        tasks        drop them

The rounds are follow-ups (see ``Stage.follow_up``): each small-star stage, once done, adds the next round or the
removals stage, from the change counts its ranks recorded in their stats.

``engine: datatrove`` gives datatrove's own steps: exact-find and minhash-cluster as one task, minhash-buckets
with num_buckets tasks.
"""

from __future__ import annotations

from typing import Any

from pipelines.recipe import Recipe
from pipelines.stage import Stage

MAX_ROUNDS = 64


def document_text(doc: Any) -> str:
    """What exact dedup hashes: the document's text."""
    return doc.text


# datatrove picks its hash function from the getter's return annotation, which must be the type itself
document_text.__annotations__["return"] = str


def dedup_engine(recipe: Recipe) -> PartitionedDedup | DatatroveDedup:
    return PartitionedDedup(recipe) if recipe.dedup.engine == "longtrove" else DatatroveDedup(recipe)


class DatatroveDedup:
    """datatrove's exact and MinHash dedup steps, unchanged."""

    def __init__(self, recipe: Recipe):
        from datatrove.pipeline.dedup import MinhashConfig
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig

        self.recipe = recipe
        self.work = recipe.work_dir.rstrip("/")
        self.exact_config = ExactDedupConfig(content_getter=document_text)
        mh = recipe.dedup.minhash
        self.minhash_config = MinhashConfig(
            n_grams=mh.n_grams, num_buckets=mh.num_buckets, hashes_per_bucket=mh.hashes_per_bucket, seed=mh.seed
        )

    def exact_signature(self) -> Any:
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature

        return ExactDedupSignature(f"{self.work}/exact/sigs", config=self.exact_config)

    def exact_find(self) -> Stage:
        from datatrove.pipeline.dedup.exact_dedup import ExactFindDedups

        step = ExactFindDedups(f"{self.work}/exact/sigs", f"{self.work}/exact/dups", config=self.exact_config)
        return Stage("exact-find", [step], 1)

    def exact_filter(self) -> Any:
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter

        return ExactDedupFilter(f"{self.work}/exact/dups", config=self.exact_config)

    def minhash_signature(self) -> Any:
        from datatrove.pipeline.dedup import MinhashDedupSignature

        return MinhashDedupSignature(f"{self.work}/minhash/sigs", config=self.minhash_config)

    def minhash_stages(self) -> list[Stage]:
        from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster

        mh, work = self.minhash_config, self.work
        buckets = MinhashDedupBuckets(f"{work}/minhash/sigs", f"{work}/minhash/buckets", config=mh)
        cluster = MinhashDedupCluster(f"{work}/minhash/buckets", f"{work}/minhash/clusters", config=mh)
        return [Stage("minhash-buckets", [buckets], mh.num_buckets), Stage("minhash-cluster", [cluster], 1)]

    def minhash_filter(self) -> Any:
        from datatrove.pipeline.dedup import MinhashDedupFilter

        return MinhashDedupFilter(f"{self.work}/minhash/clusters")


class PartitionedDedup(DatatroveDedup):
    """The same methods on stages of `partitions` tasks each (``pipelines.dedup.steps``)."""

    @property
    def partitions(self) -> int:
        """The recipe's choice, else as many as the executor's tasks (at least 2)."""
        return self.recipe.dedup.partitions or max(2, self.recipe.executor.tasks)

    def exact_signature(self) -> Any:
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature

        return ExactDedupSignature(
            f"{self.work}/exact/sigs", config=self.exact_config, finder_workers=self.partitions
        )

    def exact_find(self) -> Stage:
        from pipelines.dedup.exact import ExactFindPartition

        step = ExactFindPartition(
            f"{self.work}/exact/sigs", f"{self.work}/exact/dups", hash_config=self.exact_config.hash_config
        )
        return Stage("exact-find", [step], self.partitions)

    def minhash_signature(self) -> Any:
        from pipelines.dedup.steps import MinhashBandSignature

        mh = self.recipe.dedup.minhash
        return MinhashBandSignature(
            f"{self.work}/minhash/bands",
            partitions=self.partitions,
            n_grams=mh.n_grams,
            num_buckets=mh.num_buckets,
            hashes_per_bucket=mh.hashes_per_bucket,
            seed=mh.seed,
        )

    def minhash_stages(self) -> list[Stage]:
        """minhash-buckets and the first round; the later rounds and the removals follow up from the first."""
        from pipelines.dedup.steps import MinhashBandMatch

        graph = f"{self.work}/minhash/graph"
        buckets = MinhashBandMatch(f"{self.work}/minhash/bands", f"{graph}/edges")
        return [Stage("minhash-buckets", [buckets], self.partitions), self._round(1, f"{graph}/edges")]

    def minhash_filter(self) -> Any:
        from pipelines.dedup.steps import RemovalFilter

        return RemovalFilter(f"{self.work}/minhash/removed")

    def _round(self, number: int, source: str) -> Stage:
        from pipelines.dedup.steps import LARGE, SMALL, StarPass

        graph = f"{self.work}/minhash/graph"
        large_out, small_out = f"{graph}/large-{number:03d}", f"{graph}/small-{number:03d}"

        def after_large(large_stats: Any) -> list[Stage]:
            large_changes = _total(large_stats, "changes")

            def after_small(small_stats: Any) -> list[Stage]:
                if large_changes == 0 and _total(small_stats, "changes") == 0:
                    return [self._removals(small_out)]
                if number >= MAX_ROUNDS:
                    raise RuntimeError(
                        f"stage minhash-small-{number:03d}: components did not converge in {MAX_ROUNDS} rounds"
                    )
                return [self._round(number + 1, small_out)]

            small = StarPass(SMALL, large_out, small_out)
            return [Stage(f"minhash-small-{number:03d}", [small], self.partitions, follow_up=after_small)]

        large = StarPass(LARGE, source, large_out)
        return Stage(f"minhash-large-{number:03d}", [large], self.partitions, follow_up=after_large)

    def _removals(self, source: str) -> Stage:
        from pipelines.dedup.steps import MinhashRemovals

        step = MinhashRemovals(source, f"{self.work}/minhash/removed", ranks=self.recipe.executor.tasks)
        return Stage("minhash-removals", [step], self.partitions)


def _total(stats: Any, key: str) -> int:
    """The sum of one counter over every step of a stage's merged stats."""
    total = 0
    for step in stats.stats:
        metric = step.stats.get(key)
        if metric is not None:
            total += int(metric.get("total", 0) if isinstance(metric, dict) else getattr(metric, "total", metric))
    return total
