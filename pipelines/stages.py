"""A validated recipe turned into datatrove stages: lists of steps, each with a rank count.

A recipe reads documents, filters them, removes exact and near duplicates and writes the curated documents as
parquet. Dedup filters find documents by their position within a rank, so each stage that follows a dedup
signature step reads back exactly the file its own rank wrote before (see ``RankFileReader``).

    stage            ranks         steps
    filter           tasks         read -> filters -> write filtered [-> exact signatures | minhash signatures]
    exact-find       1             find exact duplicates
    exact-filter     tasks         read filtered -> drop exact duplicates -> write [-> minhash signatures]
    minhash-buckets  num_buckets   match signatures bucket by bucket
    minhash-cluster  1             cluster the matches
    minhash-filter   tasks         read -> drop near duplicates -> write curated
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.recipe import Recipe


def document_text(doc: Any) -> str:
    """What exact dedup hashes: the document's text."""
    return doc.text


# datatrove picks its hash function from the getter's return annotation, which must be the type itself
document_text.__annotations__["return"] = str


@dataclass
class Stage:
    """One datatrove pipeline and how many ranks run it."""

    name: str
    pipeline: list = field(repr=False)
    tasks: int


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
    """The recipe's filter steps, in order."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from pipelines.filters import LocalModelLanguageFilter, resolve_lid_model

    steps = []
    for i, spec in enumerate(recipe.filters):
        params = spec.params.model_dump()
        if spec.kind == "gopher_quality":
            steps.append(GopherQualityFilter(**params))
        elif spec.kind == "gopher_repetition":
            params["top_n_grams"] = tuple(tuple(x) for x in params["top_n_grams"])
            params["dup_n_grams"] = tuple(tuple(x) for x in params["dup_n_grams"])
            steps.append(GopherRepetitionFilter(**params))
        elif spec.kind == "c4":
            steps.append(C4QualityFilter(**params))
        elif spec.kind == "fineweb_quality":
            steps.append(FineWebQualityFilter(**params))
        elif spec.kind == "language":
            model = resolve_lid_model(params["model_path"], params["backend"], f"filters.{i}.language")
            steps.append(
                LocalModelLanguageFilter(
                    model,
                    languages=params["languages"],
                    language_threshold=params["threshold"],
                    backend=params["backend"],
                )
            )
    return steps


def build_stages(recipe: Recipe) -> list[Stage]:
    """The datatrove stages of a recipe, in the order they must run (quality buckets and shard targets after
    curation; see pipelines.curation.stages)."""
    from pipelines.curation.stages import extra_stages, nothing_to_curate

    if recipe.shards and nothing_to_curate(recipe):
        return [Stage(*spec) for spec in extra_stages(recipe, input_readers=_readers(recipe))]
    return [*_curation_stages(recipe), *(Stage(*spec) for spec in extra_stages(recipe))]


def _curation_stages(recipe: Recipe) -> list[Stage]:
    from datatrove.pipeline.dedup import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.writers import ParquetWriter

    from pipelines.readers import RankFileReader

    tasks = recipe.executor.tasks
    work = recipe.work_dir.rstrip("/")
    exact, minhash = recipe.dedup.exact.enabled, recipe.dedup.minhash.enabled

    def writer(folder: str) -> ParquetWriter:
        # one file per rank with a fixed name: what RankFileReader reads back, and byte-identical on reruns
        return ParquetWriter(
            folder,
            output_filename="${rank}.parquet",
            compression=recipe.output.compression,
            max_file_size=-1,
            use_content_defined_chunking=False,
        )

    exact_config = ExactDedupConfig(content_getter=document_text)
    mh = recipe.dedup.minhash
    minhash_config = MinhashConfig(
        n_grams=mh.n_grams, num_buckets=mh.num_buckets, hashes_per_bucket=mh.hashes_per_bucket, seed=mh.seed
    )
    stages: list[Stage] = []

    first = [*_readers(recipe), *build_filters(recipe)]
    if not exact and not minhash:
        return [Stage("filter", [*first, writer(recipe.output.path)], tasks)]
    first.append(writer(f"{work}/filtered"))
    previous = f"{work}/filtered"
    if exact:
        first.append(ExactDedupSignature(f"{work}/exact/sigs", config=exact_config))
    else:
        first.append(MinhashDedupSignature(f"{work}/minhash/sigs", config=minhash_config))
    stages.append(Stage("filter", first, tasks))

    if exact:
        stages.append(
            Stage(
                "exact-find",
                [ExactFindDedups(f"{work}/exact/sigs", f"{work}/exact/dups", config=exact_config)],
                1,
            )
        )
        target = f"{work}/exact-kept" if minhash else recipe.output.path
        steps = [
            RankFileReader(previous),
            ExactDedupFilter(f"{work}/exact/dups", config=exact_config),
            writer(target),
        ]
        if minhash:
            steps.append(MinhashDedupSignature(f"{work}/minhash/sigs", config=minhash_config))
        stages.append(Stage("exact-filter", steps, tasks))
        previous = target

    if minhash:
        stages += [
            Stage(
                "minhash-buckets",
                [
                    MinhashDedupBuckets(
                        f"{work}/minhash/sigs", f"{work}/minhash/buckets", config=minhash_config
                    )
                ],
                minhash_config.num_buckets,
            ),
            Stage(
                "minhash-cluster",
                [
                    MinhashDedupCluster(
                        f"{work}/minhash/buckets", f"{work}/minhash/clusters", config=minhash_config
                    )
                ],
                1,
            ),
            Stage(
                "minhash-filter",
                [
                    RankFileReader(previous),
                    MinhashDedupFilter(f"{work}/minhash/clusters"),
                    writer(recipe.output.path),
                ],
                tasks,
            ),
        ]
    return stages
