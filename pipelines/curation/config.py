"""Recipe sections for Nemotron-style curation: quality buckets, shard targets and their mixture.

    quality:                      # score with an ensemble of fastText classifiers, bucket by corpus percentiles
      classifiers:
        - {path: models/dclm.bin, label: hq, weight: 1.0}
      buckets: 20
    shards:                       # tokenize the result into shard folders, routed by document length in tokens
      - {name: long, min_tokens: 1048576, config: {output_folder: shards/1m, tokenizer: ..., seq_len: 1048576}}
      - {name: short, max_tokens: 1048575, config: {output_folder: shards/4k, tokenizer: ..., seq_len: 4096}}
    mixture:                      # how a trainer's ShardStream interleaves the shard folders
      sources: [{shards: long, weight: 1}, {shards: short, weight: 256}]
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Classifier(_Strict):
    """One fastText model of the ensemble, as datatrove's FastTextClassifierFilter takes it."""

    path: str = Field(description="a local fastText .bin model (nothing is downloaded)")
    label: str = Field(description="the label whose probability is the score, without '__label__'")
    weight: Annotated[float, Field(gt=0)] = 1.0
    name: str | None = Field(None, description="metadata key suffix (default: the file name and label)")

    @property
    def key(self) -> str:
        from pathlib import Path

        return self.name or f"{Path(self.path).stem}:{self.label}"


class QualityConfig(_Strict):
    """Nemotron-CC-style quality buckets: score every document, then bucket by percentiles of the corpus."""

    enabled: bool = True
    classifiers: list[Classifier] = Field(min_length=1)
    combine: Literal["mean", "max"] = Field(
        "mean",
        description="mean: weighted mean of the classifiers' probabilities, bucketed by its percentiles; "
        "max: each classifier bucketed by its own percentiles, then the highest bucket (as Nemotron-CC did)",
    )
    buckets: Annotated[int, Field(ge=2, le=1000)] = 20
    split_folders: Literal["none", "bucket", "ranges"] = Field(
        "none", description="none: one folder, bucket in metadata; bucket: a folder per bucket; ranges: per range"
    )
    ranges: list[tuple[int, int]] | None = Field(
        None, description="inclusive bucket ranges for split_folders: ranges, e.g. [[0, 9], [10, 17], [18, 19]]"
    )
    output: str | None = Field(None, description="where bucketed documents go; default: <output.path>-buckets")
    newline_replacement: str = Field(" ", description="what replaces newlines before scoring (fastText reads lines)")
    batch_size: Annotated[int, Field(gt=0)] = 512
    histogram_bins: Annotated[int, Field(ge=256, le=1 << 22)] = 1 << 16

    @model_validator(mode="after")
    def _ranges(self) -> QualityConfig:
        if self.split_folders == "ranges":
            if not self.ranges:
                raise ValueError("split_folders: ranges needs quality.ranges, e.g. [[0, 9], [10, 19]]")
            covered = sorted(b for lo, hi in self.ranges for b in range(lo, hi + 1))
            if covered != list(range(self.buckets)):
                raise ValueError(
                    f"quality.ranges must cover buckets 0..{self.buckets - 1} once each, got {self.ranges}"
                )
        return self


class ShardTarget(_Strict):
    """Documents whose token count is in [min_tokens, max_tokens], tokenized and packed into one shard folder."""

    name: str
    min_tokens: Annotated[int, Field(ge=0)] = 0
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    config: dict[str, Any] = Field(description="a `shards` step mapping (see pipelines.steps.ShardsConfig)")

    @model_validator(mode="after")
    def _check(self) -> ShardTarget:
        from pipelines.steps import ShardsConfig

        ShardsConfig(**self.config)  # validated here, so a bad key is a recipe error naming it
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"shards {self.name}: max_tokens {self.max_tokens} < min_tokens {self.min_tokens}")
        return self


class MixtureSource(_Strict):
    shards: str = Field(description="the name of a shards target")
    weight: Annotated[float, Field(gt=0)]


class MixtureConfig(_Strict):
    """A ShardStream mixture over the recipe's shard folders, written as JSON next to the output."""

    sources: list[MixtureSource] = Field(min_length=1)
    period: Annotated[int, Field(gt=0)] | None = Field(
        None, description="slots of the periodic schedule; default: the smallest that gives every weight a slot"
    )
    path: str | None = Field(None, description="where the mixture JSON goes; default: <output.path>.mixture.json")
