"""A validated recipe turned into datatrove stages: lists of steps, each with a rank count.

A recipe reads documents, filters them, removes exact and near duplicates and writes the curated documents as
parquet. Dedup filters find documents by their position within a rank, so each stage that follows a dedup
signature step reads back exactly the file its own rank wrote before (see ``RankFileReader``).

    stage            ranks         steps
    filter           tasks         read -> filters -> write filtered [-> exact signatures | minhash signatures]
    exact-find       partitions    find exact duplicates, one hash range per rank
    exact-filter     tasks         read filtered -> drop exact duplicates -> write [-> minhash signatures]
    minhash-...      partitions    band keys -> edges -> connected components
    minhash-filter   tasks         read -> drop near duplicates -> write curated

The dedup steps and stages come from ``pipelines.dedup.stages``, for the partitioned engine (the default) or, with
``dedup.engine: datatrove``, datatrove's own (exact-find and minhash-cluster as one task).
"""

from __future__ import annotations

from pipelines.dedup.stages import dedup_engine, document_text
from pipelines.recipe import Recipe
from pipelines.stage import Stage

__all__ = ["Stage", "build_filters", "build_stages", "document_text"]


def _readers(recipe: Recipe) -> list:
    from pipelines.readers import (
        GuardedHuggingFaceReader,
        GuardedJsonlReader,
        GuardedParquetReader,
        dealt_input_files,
    )

    cfg = recipe.input
    common = dict(
        on_bad_record=cfg.on_bad_record,
        max_document_chars=cfg.max_document_chars,
        text_key=cfg.text_key,
        id_key=cfg.id_key,
        limit=cfg.limit,
    )
    if cfg.format == "huggingface":
        return [GuardedHuggingFaceReader(cfg.dataset, dataset_options=cfg.dataset_options, **common)]
    if cfg.format == "named":
        from pipelines.curation.stages import named_readers

        return named_readers(cfg, common)
    reader_cls = GuardedJsonlReader if cfg.format == "jsonl" else GuardedParquetReader
    # every file of every path in one list dealt over the ranks (one reader per filesystem)
    return [
        reader_cls(folder, files=files, **common) for folder, files in dealt_input_files(cfg.paths, cfg.glob)
    ]


def build_filters(recipe: Recipe) -> list:
    """The recipe's filter steps, in order: the fast ones, or datatrove's own with ``filter_engine: datatrove``."""
    if not recipe.filters:  # the filter modules pull in spaCy (and what it imports): not for a recipe without any
        return []
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from pipelines.filters import LocalModelLanguageFilter, resolve_lid_model
    from pipelines.filters.steps import FAST_FILTERS, BatchLanguageFilter

    fast = recipe.filter_engine == "fast"
    classes = (
        FAST_FILTERS
        if fast
        else {
            "gopher_quality": GopherQualityFilter,
            "gopher_repetition": GopherRepetitionFilter,
            "c4": C4QualityFilter,
            "fineweb_quality": FineWebQualityFilter,
        }
    )
    steps = []
    for i, spec in enumerate(recipe.filters):
        params = spec.params.model_dump()
        if spec.kind == "gopher_repetition":
            params["top_n_grams"] = tuple(tuple(x) for x in params["top_n_grams"])
            params["dup_n_grams"] = tuple(tuple(x) for x in params["dup_n_grams"])
            if not fast:
                params.pop("join_fix")
        if spec.kind == "language":
            model = resolve_lid_model(params["model_path"], params["backend"], f"filters.{i}.language")
            language_class = BatchLanguageFilter if fast else LocalModelLanguageFilter
            steps.append(
                language_class(
                    model,
                    languages=params["languages"],
                    language_threshold=params["threshold"],
                    backend=params["backend"],
                )
            )
        else:
            steps.append(classes[spec.kind](**params))
    return steps


def build_stages(recipe: Recipe) -> list[Stage]:
    """The datatrove stages of a recipe, in the order they must run (quality buckets and shard targets after
    curation; see pipelines.curation.stages)."""
    from pipelines.curation.stages import extra_stages, nothing_to_curate

    if recipe.shards and nothing_to_curate(recipe):
        return [Stage(*spec) for spec in extra_stages(recipe, input_readers=_readers(recipe))]
    return [*_curation_stages(recipe), *(Stage(*spec) for spec in extra_stages(recipe))]


def _curation_stages(recipe: Recipe) -> list[Stage]:
    from datatrove.pipeline.writers import ParquetWriter

    from pipelines.readers import RankFileReader

    tasks = recipe.executor.tasks
    work = recipe.work_dir.rstrip("/")
    exact, minhash = recipe.dedup.exact.enabled, recipe.dedup.minhash.enabled
    dedup = dedup_engine(recipe)

    def writer(folder: str) -> ParquetWriter:
        # one file per rank with a fixed name: what RankFileReader reads back, and byte-identical on reruns
        return ParquetWriter(
            folder,
            output_filename="${rank}.parquet",
            compression=recipe.output.compression,
            max_file_size=-1,
            use_content_defined_chunking=False,
        )

    first = [*_readers(recipe), *build_filters(recipe)]
    if not exact and not minhash:
        return [Stage("filter", [*first, writer(recipe.output.path)], tasks)]
    first += [writer(f"{work}/filtered"), dedup.exact_signature() if exact else dedup.minhash_signature()]
    stages = [Stage("filter", first, tasks)]
    previous = f"{work}/filtered"
    if exact:
        target = f"{work}/exact-kept" if minhash else recipe.output.path
        steps = [RankFileReader(previous), dedup.exact_filter(), writer(target)]
        if minhash:
            steps.append(dedup.minhash_signature())
        stages += [dedup.exact_find(), Stage("exact-filter", steps, tasks)]
        previous = target
    if minhash:
        steps = [RankFileReader(previous), dedup.minhash_filter(), writer(recipe.output.path)]
        stages += [*dedup.minhash_stages(), Stage("minhash-filter", steps, tasks)]
    return stages
