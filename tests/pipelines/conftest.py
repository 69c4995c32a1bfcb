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


def train_lid_model(folder: Path, prose_docs: list[dict], seed: int = 5, epoch: int = 5) -> Path:
    """A real fastText language-ID model: English prose (label en) against its letters shuffled (label zz)."""
    import random
    import subprocess
    import sys

    rng = random.Random(seed)
    english = [line for d in prose_docs[:30] for line in d["text"].split("\n") if len(line.split()) > 6]
    train = folder / "train.txt"
    with train.open("w") as f:
        for line in english:
            letters = list(line.lower())
            rng.shuffle(letters)
            f.write(f"__label__en {line}\n__label__zz {''.join(letters)}\n")
    model_path = folder / "lid.bin"
    # Trained in a fresh interpreter: fastText's training reports NaN when a library loaded earlier in this long
    # test process has changed the floating-point mode; the model is then used by the Dask workers as usual.
    train_code = (
        f"import fasttext, sys; fasttext.train_supervised(sys.argv[1], epoch={epoch}, seed=0, thread=1, verbose=0)"
        ".save_model(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", train_code, str(train), str(model_path)], check=True)
    return model_path
