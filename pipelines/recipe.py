"""Curation recipes: YAML, validated into typed objects before anything runs.

A recipe reads documents, filters them, removes exact and near duplicates and writes the curated documents as
parquet. ``pipelines.stages`` turns a validated recipe into datatrove stages and ``pipelines.runner`` runs them;
``run_recipe`` and ``load_recipe`` are also importable from ``pipelines``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.curation.config import MixtureConfig, QualityConfig, ShardTarget

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "default.yaml"


class RecipeError(ValueError):
    """The recipe cannot run; the message names the file and the key or path at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- input --------------------------------------------------------------------------------------------------------
class InputConfig(_Strict):
    format: Literal["jsonl", "parquet", "huggingface", "named"] = "jsonl"
    paths: list[str] = Field(default_factory=list, description="files or folders, local paths or fsspec URLs")
    glob: str | None = Field(None, description="only files matching this pattern inside folders")
    dataset: str | None = Field(
        None, description="huggingface: a hub id (from the local cache) or a builder name"
    )
    dataset_options: dict[str, Any] = Field(
        default_factory=dict, description="passed to datasets.load_dataset"
    )
    config: str | None = Field(None, description="named: the dataset's config (see `longtrove datasets`)")
    local_copy: str | None = Field(None, description="named: a local folder with the hub's file layout")
    data_files: str | None = Field(None, description="named: a glob under the dataset's root, if not the catalogue's")
    text_key: str = "text"
    id_key: str = "id"
    on_bad_record: Literal["skip", "fail"] = "skip"
    max_document_chars: Annotated[int, Field(gt=0)] | None = 8_000_000
    limit: int = Field(-1, description="documents per rank, -1 for all")

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        from pipelines.datasets.catalog import is_named

        # `input: {dataset: nvidia/Nemotron-CC-v2, config: High-Quality}` names a catalogue dataset
        if isinstance(data, dict) and "format" not in data and is_named(data.get("dataset")):
            data = {**data, "format": "named"}
        return data

    @model_validator(mode="after")
    def _source(self) -> InputConfig:
        if self.format == "named":
            from pipelines.datasets.catalog import check_named_input

            check_named_input(self)
        elif self.format == "huggingface":
            if not self.dataset:
                raise ValueError("input.format is huggingface: set input.dataset")
            if "split" not in self.dataset_options:
                raise ValueError("input.format is huggingface: set input.dataset_options.split (e.g. train)")
        elif not self.paths:
            raise ValueError(
                f"input.format is {self.format}: set input.paths to one or more files or folders"
            )
        return self


# -- filters ------------------------------------------------------------------------------------------------------
class GopherQuality(_Strict):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    language: str = "en"


class GopherRepetition(_Strict):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    language: str = "en"
    join_fix: bool = Field(
        False,
        description="compare duplicated n-grams word by word; datatrove joins their words without a separator, "
        "so 'ab c' repeats 'a bc' (fast engine only; see docs/curation.md)",
    )


class C4Quality(_Strict):
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    language: str = "en"


class FineWebQuality(_Strict):
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    language: str = "en"


class LanguageId(_Strict):
    languages: list[str] | None = ["en"]
    threshold: float = 0.65
    backend: Literal["ft176", "glotlid"] = "ft176"
    model_path: str | None = Field(None, description="a local fastText model; nothing is downloaded")


class FilterSpec(_Strict):
    """One filter: a mapping with exactly one key naming it, e.g. ``- gopher_quality: {min_doc_words: 30}``."""

    gopher_quality: GopherQuality | None = None
    gopher_repetition: GopherRepetition | None = None
    c4: C4Quality | None = None
    fineweb_quality: FineWebQuality | None = None
    language: LanguageId | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        if isinstance(data, str):  # "- c4" is shorthand for "- c4: {}"
            data = {data: {}}
        if isinstance(data, dict):
            data = {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> FilterSpec:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"each filter names exactly one of {list(type(self).model_fields)}, got {chosen}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def params(self) -> BaseModel:
        return getattr(self, self.kind)


# -- dedup, output, executor --------------------------------------------------------------------------------------
class ExactDedup(_Strict):
    enabled: bool = True


class MinhashDedup(_Strict):
    enabled: bool = True
    n_grams: Annotated[int, Field(gt=0)] = 5
    num_buckets: Annotated[int, Field(gt=0)] = 14
    hashes_per_bucket: Annotated[int, Field(gt=0)] = 8
    seed: int = 1


class DedupConfig(_Strict):
    engine: Literal["longtrove", "datatrove"] = Field(
        "longtrove", description="longtrove: partitioned stages, fast signatures; datatrove: its own stages"
    )
    partitions: Annotated[int, Field(ge=2)] | None = Field(
        None, description="tasks of each partitioned dedup stage; default: executor.tasks, at least 2"
    )
    exact: ExactDedup = ExactDedup()
    minhash: MinhashDedup = MinhashDedup()


class OutputConfig(_Strict):
    path: str = "curated"
    work_dir: str | None = Field(None, description="intermediate files and logs; default: <path>.work")
    compression: Literal["snappy", "gzip", "brotli", "lz4", "zstd"] | None = "zstd"


class ExecutorConfig(_Strict):
    tasks: Annotated[int, Field(gt=0)] = 4
    workers: Annotated[int, Field(gt=0)] | None = None
    scheduler: str | None = Field(None, description="address of a running Dask scheduler")
    skip_completed: bool = True


class Recipe(_Strict):
    name: str = "curation"
    input: InputConfig
    filters: list[FilterSpec] = Field(default_factory=list)
    filter_engine: Literal["fast", "datatrove"] = Field(
        "fast",
        description="fast: shared words, same decisions; datatrove: datatrove's filter classes as they are",
    )
    dedup: DedupConfig = DedupConfig()
    output: OutputConfig = OutputConfig()
    executor: ExecutorConfig = ExecutorConfig()
    quality: QualityConfig | None = None
    shards: list[ShardTarget] = Field(default_factory=list)
    mixture: MixtureConfig | None = None

    @model_validator(mode="after")
    def _mixture_names_targets(self) -> Recipe:
        names = [t.name for t in self.shards]
        if len(set(names)) != len(names):
            raise ValueError(f"shards: target names must differ, got {names}")
        for i, source in enumerate(self.mixture.sources if self.mixture else []):
            if source.shards not in names:
                raise ValueError(f"mixture.sources.{i}.shards: no shards target {source.shards!r} (targets: {names})")
        return self

    @model_validator(mode="after")
    def _engine_options(self) -> Recipe:
        if self.filter_engine == "datatrove":
            for i, spec in enumerate(self.filters):
                if spec.gopher_repetition is not None and spec.gopher_repetition.join_fix:
                    raise ValueError(
                        f"filters.{i}.gopher_repetition.join_fix needs filter_engine: fast "
                        "(datatrove's filter has no such option)"
                    )
        return self

    @property
    def work_dir(self) -> str:
        return self.output.work_dir or f"{self.output.path.rstrip('/')}.work"


# -- loading ------------------------------------------------------------------------------------------------------
def _format_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid recipe {source}:"]
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in item and item["type"] not in ("missing", "value_error"):
            message += f" (got {item['input']!r})"
        lines.append(f"  {loc or '<top>'}: {message}")
    return "\n".join(lines)


def _resolve(path: str, base: Path) -> str:
    """Relative local paths in a recipe are relative to the recipe's folder; URLs are left alone."""
    if "://" in path or os.path.isabs(path):
        return path
    return str((base / os.path.expanduser(path)).resolve())


def parse_recipe(
    data: Any, source: str = "<recipe>", base_dir: Path | None = None, check_paths: bool = True
) -> Recipe:
    """Validate a recipe mapping; relative paths are taken from `base_dir`; input paths must exist."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"invalid recipe {source}: expected a mapping at the top, got {type(data).__name__}"
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_error(source, e)) from None
    if base_dir is not None:
        recipe.input.paths = [_resolve(p, base_dir) for p in recipe.input.paths]
        recipe.output.path = _resolve(recipe.output.path, base_dir)
        if recipe.output.work_dir:
            recipe.output.work_dir = _resolve(recipe.output.work_dir, base_dir)
        for spec in recipe.filters:
            if spec.language is not None and spec.language.model_path:
                spec.language.model_path = _resolve(spec.language.model_path, base_dir)
        from pipelines.curation.paths import resolve_curation_paths

        resolve_curation_paths(recipe, lambda p: _resolve(p, base_dir))
    if check_paths:
        check_recipe(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: dict | None = None, check_paths: bool = True) -> Recipe:
    """Read and validate a YAML recipe file (plus optional overrides merged on top)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"invalid recipe {path}: not valid YAML ({e})") from None
    if overrides:
        data = _merge(data or {}, overrides)
    return parse_recipe(data, str(path), base_dir=path.parent, check_paths=check_paths)


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def check_recipe(recipe: Recipe, source: str = "<recipe>") -> None:
    """Checks that need the file system: input paths exist, model files are present."""
    from fsspec.core import url_to_fs

    from pipelines.filters import OfflineModelError, resolve_lid_model

    for i, path in enumerate(recipe.input.paths):
        try:
            fs, fs_path = url_to_fs(path)
            exists = fs.exists(fs_path)
        except Exception as e:  # an unreachable store or missing credentials
            raise RecipeError(
                f"invalid recipe {source}: input.paths.{i}: cannot check {path!r} ({e})"
            ) from None
        if not exists:
            raise RecipeError(f"invalid recipe {source}: input.paths.{i}: no such file or folder {path!r}")
        if fs.isdir(fs_path):
            from datatrove.io import get_datafolder

            if not get_datafolder(path).list_files(glob_pattern=recipe.input.glob):
                pattern = f" matching input.glob {recipe.input.glob!r}" if recipe.input.glob else ""
                raise RecipeError(f"invalid recipe {source}: input.paths.{i}: no files{pattern} in {path!r}")
    _check_text_key(recipe, source)
    from pipelines.curation.paths import check_curation_files
    from pipelines.datasets.catalog import DatasetAccessError, check_named_access

    if recipe.input.format == "named":
        try:
            check_named_access(recipe.input)
        except DatasetAccessError as e:
            raise RecipeError(f"invalid recipe {source}: input: {e}") from None
    for problem in check_curation_files(recipe):
        raise RecipeError(f"invalid recipe {source}: {problem}")
    for i, spec in enumerate(recipe.filters):
        if spec.kind == "language":
            try:
                resolve_lid_model(spec.language.model_path, spec.language.backend, f"filters.{i}.language")
            except OfflineModelError as e:
                raise RecipeError(f"invalid recipe {source}: {e}") from None


def _check_text_key(recipe: Recipe, source: str) -> None:
    """A wrong input.text_key would drop every document as missing_text: refuse it before anything runs."""
    from datatrove.io import get_datafolder
    from fsspec.core import url_to_fs

    from pipelines.inputs import InputError, UnreadableInputError, check_text_field

    if recipe.input.format not in ("jsonl", "parquet"):
        return
    for path in recipe.input.paths:
        fs, fs_path = url_to_fs(path)
        if fs.isdir(fs_path):
            folder = get_datafolder(path)
            files = [folder.resolve_paths(f) for f in folder.list_files(glob_pattern=recipe.input.glob)]
        else:
            files = [path]
        for file in files:
            try:
                check_text_field(
                    file,
                    recipe.input.text_key,
                    parquet=recipe.input.format == "parquet",
                    hint="set input.text_key to the field that holds the text",
                    # a few bad records are skipped and counted; a wrong key misses in all of them
                    records=1 if recipe.input.on_bad_record == "fail" else 20,
                )
            except UnreadableInputError:
                continue  # the reader skips and counts it, or stops naming it, as input.on_bad_record says
            except InputError as e:
                raise RecipeError(f"invalid recipe {source}: input.text_key: {e}") from None
