"""The built-in catalogue of NVIDIA's open pretraining datasets: names to files, columns, size and licence gate.

The facts live in ``catalog.yaml`` beside this file, each with the source it came from; facts that could not be
checked are marked ``verified: false`` and shown as such. Resolving a name needs no network: it only reads the
catalogue. Reading the data then goes through ``huggingface_hub`` (``hf://datasets/...``, with the user's token)
or through a local copy that keeps the hub's file layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
LOCAL_COPIES_ENV = "LONGTROVE_DATASETS_DIR"  # a folder holding <owner>/<name>/ copies in the hub's layout


class DatasetAccessError(RuntimeError):
    """A named dataset cannot be read; the message says what to do (accept terms, set HF_TOKEN, local copy)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fact(_Model):
    """A sourced value: a column name or a file pattern, with where it came from."""

    name: str | None = None
    pattern: str | None = None
    verified: bool = True
    source: str


class Access(_Model):
    gated: bool
    licence: str
    terms: str
    source: str


class Size(_Model):
    tokens: float | None = None
    rows: float | None = None
    source: str


class ConfigEntry(_Model):
    source: str
    verified: bool = True
    rows: float | None = None
    data_files: str | None = None
    text_column: str | None = None  # when it differs from the dataset's
    metadata_only: bool = False  # no text at all (e.g. code metadata: repo, path, commit)
    metadata_columns: list[str] = []


class DatasetEntry(_Model):
    description: str
    access: Access
    text_column: Fact
    id_column: Fact
    layout: Fact
    size: Size | None = None
    configs: dict[str, ConfigEntry]


@dataclass(frozen=True)
class NamedSource:
    """One config of one catalogue dataset, resolved to where its files are and which columns to read."""

    dataset: str
    config: str
    text_key: str | None
    id_key: str
    data_files: str  # glob relative to the dataset's root, e.g. "High-Quality/*.parquet"
    entry: DatasetEntry
    local_copy: str | None = None

    @property
    def root(self) -> str:
        """The folder that holds `data_files`: the local copy, or the dataset on the hub."""
        return self.local_copy or f"hf://datasets/{self.dataset}"

    @property
    def rows(self) -> float | None:
        return self.entry.configs[self.config].rows

    @property
    def unverified(self) -> list[str]:
        """Facts this source relies on that no source confirmed."""
        notes = []
        for what, fact in (("text column", self.entry.text_column), ("id column", self.entry.id_column),
                           ("file layout", self.entry.layout)):
            if not fact.verified:
                notes.append(what)
        if not self.entry.configs[self.config].verified:
            notes.append("config name")
        return notes


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, DatasetEntry]:
    """The catalogue, validated (a malformed entry is an error naming it)."""
    data = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    return {name: DatasetEntry.model_validate(entry) for name, entry in data["datasets"].items()}


@lru_cache(maxsize=1)
def source_legend() -> dict[str, str]:
    """What each source key of the catalogue (``[nano3]``, ...) refers to."""
    return dict(yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))["sources"])


def is_named(name: str | None) -> bool:
    return bool(name) and name in load_catalog()


def resolve(
    dataset: str, config: str | None = None, *, local_copy: str | os.PathLike[str] | None = None,
    data_files: str | None = None,
) -> NamedSource:
    """A catalogue name (and config) to files and columns, without touching the network.

    `local_copy` is a folder with the hub's layout; without it, ``$LONGTROVE_DATASETS_DIR/<owner>/<name>`` is
    used when that folder exists.
    """
    catalog = load_catalog()
    if dataset not in catalog:
        raise KeyError(f"{dataset!r} is not in the catalogue (known: {', '.join(catalog)})")
    entry = catalog[dataset]
    if config is None:
        if len(entry.configs) != 1:
            raise ValueError(f"{dataset}: name a config, one of {list(entry.configs)}")
        config = next(iter(entry.configs))
    if config not in entry.configs:
        raise ValueError(f"{dataset}: no config {config!r}; configs: {list(entry.configs)}")
    cfg = entry.configs[config]
    text_key = None if cfg.metadata_only else (cfg.text_column or entry.text_column.name)
    pattern = data_files or cfg.data_files or (entry.layout.pattern or "{config}/*.parquet").format(config=config)
    if local_copy is None and os.environ.get(LOCAL_COPIES_ENV):
        candidate = Path(os.environ[LOCAL_COPIES_ENV]) / dataset
        local_copy = candidate if candidate.is_dir() else None
    return NamedSource(
        dataset=dataset,
        config=config,
        text_key=text_key,
        id_key=entry.id_column.name or "id",
        data_files=pattern,
        entry=entry,
        local_copy=None if local_copy is None else str(Path(local_copy).expanduser().resolve()),
    )


def require_text(source: NamedSource) -> str:
    """The text column, or an error for configs that hold only metadata."""
    if not source.text_key:
        cfg = source.entry.configs[source.config]
        raise DatasetAccessError(
            f"{source.dataset} config {source.config} holds no text (columns: {cfg.metadata_columns}); "
            "it cannot be tokenized or curated"
        )
    return source.text_key


def list_files(source: NamedSource) -> list[str]:
    """The data files of a source (local copy or hub), checked up front: any access problem becomes one
    DatasetAccessError saying what to do, before a worker starts."""
    if source.local_copy:
        root = Path(source.local_copy)
        if not root.is_dir():
            raise DatasetAccessError(f"{source.dataset}: local copy {str(root)!r} is not a folder")
        files = sorted(str(p) for p in root.glob(source.data_files) if p.is_file())
        if not files:
            raise DatasetAccessError(
                f"{source.dataset} config {source.config}: no files matching {source.data_files!r} in the "
                f"local copy {str(root)!r} (it must keep the hub's layout)"
            )
        return files
    check_hub_access(source.dataset)
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()
    try:
        found = sorted(fs.glob(f"datasets/{source.dataset}/{source.data_files}"))
    except Exception as e:  # noqa: BLE001 - any listing failure gets the same instructions
        raise DatasetAccessError(_hub_advice(source.dataset, e)) from None
    if not found:
        raise DatasetAccessError(
            f"{source.dataset} config {source.config}: no files match {source.data_files!r} on the hub; the "
            "catalogue's layout may be out of date (set input.data_files)"
        )
    return [f"hf://{path}" for path in found]


def check_hub_access(dataset: str) -> None:
    """Fail fast, with instructions, when the hub is unreachable or the dataset's terms are not accepted."""
    import huggingface_hub

    try:
        huggingface_hub.auth_check(dataset, repo_type="dataset")
    except Exception as e:  # noqa: BLE001 - gated, missing token, offline: each gets its advice
        raise DatasetAccessError(_hub_advice(dataset, e)) from None


def _hub_advice(dataset: str, error: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    page = f"https://huggingface.co/datasets/{dataset}"
    local = (
        f"or point at a local copy with the hub's file layout (input.local_copy, or "
        f"${LOCAL_COPIES_ENV}/{dataset})"
    )
    if isinstance(error, GatedRepoError):
        return (
            f"{dataset} is gated: accept its terms at {page} with your account, then set HF_TOKEN "
            f"(or run `hf auth login`), {local}"
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"{dataset}: not found, or not visible without a token: accept the terms at {page} and set HF_TOKEN, "
            f"{local}"
        )
    if isinstance(error, OfflineModeIsEnabled):
        return f"{dataset}: the hub is disabled (HF_HUB_OFFLINE is set): unset it, {local}"
    return f"{dataset}: cannot reach the Hugging Face hub ({type(error).__name__}: {error}): check the network, {local}"


def describe_rows() -> list[dict[str, Any]]:
    """One row per dataset for `longtrove datasets`."""
    rows = []
    for name, entry in load_catalog().items():
        size = entry.size
        rows.append(
            {
                "dataset": name,
                "configs": list(entry.configs),
                "text": entry.text_column.name,
                "id": entry.id_column.name if entry.id_column.verified else f"{entry.id_column.name}?",
                "tokens": size.tokens if size else None,
                "rows": size.rows if size else None,
                "gate": entry.access.licence if entry.access.gated else "open",
                "entry": entry,
            }
        )
    return rows


def check_named_input(cfg: Any) -> None:
    """Recipe validation of `input: {dataset: NAME, config: ...}`: a known name and config with text; the text and
    id keys become the catalogue's unless the recipe names them."""
    if not is_named(cfg.dataset):
        raise ValueError(f"input.dataset {cfg.dataset!r} is not in the catalogue (see `longtrove datasets`)")
    source = resolve(cfg.dataset, cfg.config, data_files=cfg.data_files)
    try:
        text_key = require_text(source)
    except DatasetAccessError as e:
        raise ValueError(str(e)) from None
    if "text_key" not in cfg.model_fields_set:
        cfg.text_key = text_key
    if "id_key" not in cfg.model_fields_set:
        cfg.id_key = source.id_key
    cfg.config = source.config


def check_named_access(cfg: Any) -> list[str]:
    """Before any worker starts: the named input's files, from its local copy or the hub (DatasetAccessError
    with instructions when gated, offline or missing)."""
    return list_files(resolve(cfg.dataset, cfg.config, local_copy=cfg.local_copy, data_files=cfg.data_files))


def parse_named_spec(spec: str) -> NamedSource | None:
    """`NAME` or `NAME:CONFIG` of a catalogue dataset (as `pack` takes it), else None."""
    name, _, config = spec.partition(":")
    if not is_named(name):
        return None
    try:
        return resolve(name, config or None)
    except ValueError as e:
        raise DatasetAccessError(str(e)) from None
