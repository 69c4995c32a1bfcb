"""The stages a recipe's quality, shards and mixture sections add after curation, and readers of named datasets.

    stage             ranks   steps
    quality-score     tasks   read curated (own rank) -> score -> write scored; histograms per rank
    quality-bucket    tasks   read scored (own rank) -> bucket by merged percentiles -> write bucketed
    shards-<name>     tasks   read (bucketed | curated | the input itself) -> token length range -> pack
    shards-index      1       index.json of every target -> mixture JSON (a few small files)

A recipe with nothing to curate (no filters, no dedup, no quality) packs straight from its input.
Stages are returned as (name, steps, ranks) triples; ``pipelines.stages`` makes them its Stage objects.
"""

from __future__ import annotations

from typing import Any

from pipelines.curation.config import QualityConfig

StageSpec = tuple[str, list, int]  # (name, steps, ranks)


def quality_output(recipe: Any) -> str:
    quality: QualityConfig = recipe.quality
    return (quality.output or f"{recipe.output.path.rstrip('/')}-buckets").rstrip("/")


def mixture_path(recipe: Any) -> str:
    return recipe.mixture.path or f"{recipe.output.path.rstrip('/')}.mixture.json"


def nothing_to_curate(recipe: Any) -> bool:
    """Only tokenization asked: no filters, no dedup, no quality buckets."""
    dedup = recipe.dedup
    quality = getattr(recipe, "quality", None)
    return (
        not recipe.filters
        and not dedup.exact.enabled
        and not dedup.minhash.enabled
        and (quality is None or not quality.enabled)
    )


def named_readers(cfg: Any, common: dict[str, Any]) -> list:
    """The reader of a catalogue dataset (input.dataset + input.config): its local copy or the hub, with the
    catalogue's text and id columns; every other column is kept as metadata, plus the dataset and config."""
    from pipelines.datasets.catalog import require_text, resolve
    from pipelines.readers import GuardedParquetReader

    source = resolve(cfg.dataset, cfg.config, local_copy=cfg.local_copy, data_files=cfg.data_files)
    common = dict(common, text_key=require_text(source), id_key=source.id_key)
    return [
        GuardedParquetReader(
            source.root,
            glob_pattern=source.data_files,
            default_metadata={"dataset": source.dataset, "config": source.config},
            **common,
        )
    ]


def _writer(folder: str, compression: str | None, filename: str = "${rank}.parquet") -> Any:
    from datatrove.pipeline.writers import ParquetWriter

    return ParquetWriter(
        folder, output_filename=filename, compression=compression, max_file_size=-1,
        use_content_defined_chunking=False,
    )


def quality_stages(recipe: Any) -> list[StageSpec]:
    """The two quality passes over the curated documents (one file per rank, read back by the same rank)."""
    from pipelines.curation.quality import BucketAssigner, EnsembleScorer
    from pipelines.readers import RankFileReader

    cfg: QualityConfig = recipe.quality
    work = f"{recipe.work_dir.rstrip('/')}/quality"
    tasks = recipe.executor.tasks
    out = quality_output(recipe)
    filename = "${rank}.parquet" if cfg.split_folders == "none" else "${quality_folder}/${rank}.parquet"
    compression = recipe.output.compression
    return [
        (
            "quality-score",
            [RankFileReader(recipe.output.path), EnsembleScorer(cfg, f"{work}/histograms"),
             _writer(f"{work}/scored", compression)],
            tasks,
        ),
        (
            "quality-bucket",
            [RankFileReader(f"{work}/scored"),
             BucketAssigner(cfg, f"{work}/histograms", ranks=tasks, edges_file=f"{out}.edges.json"),
             _writer(out, compression, filename)],
            tasks,
        ),
    ]


def shard_stages(recipe: Any, input_readers: list | None = None) -> list[StageSpec]:
    """One packing stage per shard target, then one small stage writing every index and the mixture JSON."""
    from pipelines.curation.shards import TokenLengthRange, WriteMixture, default_period
    from pipelines.readers import GuardedParquetReader
    from pipelines.steps import TokenizeAndPack, WriteShardIndex

    tasks = recipe.executor.tasks
    if input_readers is not None:
        make_readers = lambda: input_readers  # noqa: E731 - packing straight from the input
    else:
        quality = getattr(recipe, "quality", None)
        source = quality_output(recipe) if quality is not None and quality.enabled else recipe.output.path

        def make_readers() -> list:
            return [GuardedParquetReader(source, glob_pattern="**/*.parquet", read_metadata=False)]

    stages = []
    index_steps = []
    folders = {}
    for target in recipe.shards:
        step = TokenizeAndPack.from_config(target.config)
        routing = []
        if target.min_tokens > 0 or target.max_tokens is not None:  # only then is counting tokens worth it
            routing = [TokenLengthRange(target.config, target.min_tokens, target.max_tokens)]
        stages.append((f"shards-{target.name}", [*make_readers(), *routing, step], tasks))
        folders[target.name] = step.config.output_folder
        index_steps.append(WriteShardIndex(step.config.output_folder, world_size=tasks))
    if recipe.mixture is not None:
        sources = [(folders[s.shards], s.weight) for s in recipe.mixture.sources]
        period = recipe.mixture.period or default_period([w for _, w in sources])
        index_steps.append(WriteMixture(mixture_path(recipe), sources, period))
    if index_steps:
        stages.append(("shards-index", index_steps, 1))
    return stages


def extra_stages(recipe: Any, input_readers: list | None = None) -> list[StageSpec]:
    """Everything the recipe asks after curation: quality buckets, shard targets, the mixture."""
    stages = []
    quality = getattr(recipe, "quality", None)
    if quality is not None and quality.enabled:
        stages += quality_stages(recipe)
    if getattr(recipe, "shards", None):
        stages += shard_stages(recipe, input_readers)
    return stages


def curates_documents(recipe: Any) -> bool:
    """Whether the run writes curated documents (a recipe that only tokenizes into shards writes none)."""
    return not (recipe.shards and nothing_to_curate(recipe))


def finished_outputs(recipe: Any, curated_documents: int | None = None) -> list[str]:
    """What a finished run of the recipe left, one line each, for the end of `longtrove curate`."""
    lines = []
    if curates_documents(recipe):
        count = "" if curated_documents is None else f" ({curated_documents:,} documents)"
        lines.append(f"curated documents: {recipe.output.path}{count}")
    quality = getattr(recipe, "quality", None)
    if quality is not None and quality.enabled:
        out = quality_output(recipe)
        lines.append(f"quality buckets: {out} (percentile edges: {out}.edges.json)")
    for target in getattr(recipe, "shards", []):
        lines.append(f"shards {target.name}: {target.config['output_folder']}")
    if getattr(recipe, "mixture", None) is not None:
        lines.append(f"mixture: {mixture_path(recipe)} (pipelines.curation.shards.open_mixture)")
    return lines
