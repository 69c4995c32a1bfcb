"""Fixtures for the curation tests: one real Dask LocalCluster for the session, and small real corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import python_prose


@pytest.fixture(scope="session")
def dask_client():
    """Two single-threaded worker processes, shared by the tests that do not need a cluster of their own."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def write_jsonl(path: Path, records: list[dict | bytes]) -> Path:
    """One record a line; bytes are written as they are (for broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="session")
def prose_docs() -> list[dict]:
    """Real documents (Python's documentation topics) with stable ids."""
    return [{"id": f"topic-{i:03d}", "text": text} for i, text in enumerate(python_prose())]


def simple_recipe(inputs: list[Path], out: Path, **extra) -> dict:
    """A recipe mapping with no filters and no dedup: read, check, write."""
    recipe = {
        "input": {"format": "jsonl", "paths": [str(p) for p in inputs]},
        "filters": [],
        "dedup": {"exact": {"enabled": False}, "minhash": {"enabled": False}},
        "output": {"path": str(out / "curated"), "work_dir": str(out / "work")},
        "executor": {"tasks": 2},
    }
    for key, value in extra.items():
        if isinstance(value, dict):
            recipe.setdefault(key, {}).update(value)
        else:
            recipe[key] = value
    return recipe
