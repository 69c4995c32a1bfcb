"""Quality buckets: real fastText models trained here, scored in batches, bucketed by corpus percentiles on Dask."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.curation.buckets import (
    assign_buckets,
    bucket_edges,
    ensemble_buckets,
    histogram,
    rank_histograms,
)
from pipelines.recipe import parse_recipe
from pipelines.runner import read_curated, run_recipe
from tests.pipelines.conftest import simple_recipe, write_jsonl

TRAIN_CODE = (
    "import fasttext, sys; fasttext.train_supervised(sys.argv[1], epoch=int(sys.argv[3]), seed=0, thread=1, "
    "verbose=0, wordNgrams=1).save_model(sys.argv[2])"
)


def _shuffle_words(text: str, fraction: float, rng: random.Random) -> str:
    """Replace a fraction of the words by letter-shuffled ones: more noise, lower quality."""
    words = text.split()
    for i in range(len(words)):
        if rng.random() < fraction:
            letters = list(words[i].lower())
            rng.shuffle(letters)
            words[i] = "".join(letters)
    return " ".join(words)


def train_quality_model(folder: Path, prose: list[str], name: str, epoch: int, seed: int) -> Path:
    """A real fastText model (labels hq / lq), trained in a fresh interpreter (fastText's training can report
    NaN when a library loaded earlier in the test process changed the floating-point mode)."""
    rng = random.Random(seed)
    lines = [line for text in prose for line in text.split("\n") if len(line.split()) > 6]
    train = folder / f"{name}.txt"
    with train.open("w") as f:
        for line in lines:
            f.write(f"__label__hq {line}\n__label__lq {_shuffle_words(line, 0.9, rng)}\n")
    path = folder / f"{name}.bin"
    subprocess.run([sys.executable, "-c", TRAIN_CODE, str(train), str(path), str(epoch)], check=True)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, prose_docs) -> list[Path]:
    folder = tmp_path_factory.mktemp("fasttext")
    prose = [d["text"] for d in prose_docs[:60]]
    return [train_quality_model(folder, prose, "a", 3, 1), train_quality_model(folder, prose[20:], "b", 2, 2)]


@pytest.fixture(scope="module")
def graded_docs(prose_docs) -> list[dict]:
    """Documents from clean to noisy, so that scores spread over the whole range."""
    rng = random.Random(7)
    pieces = [d["text"][start : start + 800] for d in prose_docs for start in range(0, len(d["text"]) - 800, 800)]
    rng.shuffle(pieces)
    return [
        {"id": f"d{i:03d}", "text": _shuffle_words(text, (i % 12) / 11, rng)} for i, text in enumerate(pieces[:120])
    ]


def _recipe(tmp_path: Path, inputs: list[Path], models: list[Path], tasks: int, workers: int, **quality) -> dict:
    data = simple_recipe(inputs, tmp_path, executor={"tasks": tasks, "workers": workers})
    data["quality"] = {
        "classifiers": [
            {"path": str(models[0]), "label": "hq", "weight": 2.0},
            {"path": str(models[1]), "label": "hq", "weight": 1.0},
        ],
        "buckets": 5,
        "batch_size": 16,
        **quality,
    }
    return data


# -- the array work ------------------------------------------------------------------------------------------------
def test_buckets_are_monotone_and_balanced():
    rng = np.random.default_rng(0)
    scores = rng.beta(0.3, 0.3, size=20_000)  # crowded near 0 and 1, as fastText probabilities are
    bins = 1 << 16
    edges = bucket_edges(histogram(scores, bins), 20)
    buckets = assign_buckets(scores, edges, bins)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(buckets[order]) >= 0)
    counts = np.bincount(buckets, minlength=20)
    assert counts.min() >= 900 and counts.max() <= 1100  # 1,000 each, up to ties within a bin


def test_merged_rank_histograms_give_the_same_edges_as_one_pass():
    rng = np.random.default_rng(1)
    scores = rng.random((3000, 2))
    weights = np.array([2.0, 1.0])
    whole = rank_histograms(scores, weights, 4096)
    parts = sum(rank_histograms(part, weights, 4096) for part in np.array_split(scores, 7))
    assert np.array_equal(whole, parts)
    mean, buckets = ensemble_buckets(scores, weights, parts, 10, "mean")
    assert np.all(np.diff(buckets[np.argsort(mean)]) >= 0)
    _, top = ensemble_buckets(scores, weights, parts, 10, "max")
    per = [ensemble_buckets(scores[:, [i]], [1.0], parts[[i + 1, i + 1]], 10, "mean")[1] for i in range(2)]
    assert np.array_equal(top, np.maximum(*per))


# -- the fast path against datatrove ------------------------------------------------------------------------------
def test_batched_scores_equal_datatrove_fasttext_filter(models, graded_docs):
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    from pipelines.curation.quality import load_fasttext, score_texts

    # a remove threshold no score reaches: datatrove annotates every document and keeps it
    reference = FastTextClassifierFilter(str(models[0]), remove_labels=[("hq", 2.0)], newline_replacement=" ")
    expected = []
    for d in graded_docs:
        doc = Document(text=d["text"], id=d["id"])
        reference.filter(doc)
        expected.append(doc.metadata["__label__hq"])
    got = score_texts(load_fasttext(str(models[0])), [d["text"] for d in graded_docs], "hq", " ")
    assert np.array_equal(got, np.array(expected))
    assert got.min() < 0.2 and got.max() > 0.8  # the corpus really spreads over the range


# -- the pipeline on a real cluster -------------------------------------------------------------------------------
def _buckets_by_id(folder: str) -> dict[str, tuple[int, float]]:
    return {d["id"]: (d["metadata"]["quality_bucket"], d["metadata"]["quality_score"]) for d in read_curated(folder)}


@pytest.mark.slow
def test_bucket_step_is_monotone_and_stable_across_reruns_and_workers(tmp_path, models, graded_docs, dask_client):
    from distributed import Client, LocalCluster

    inputs = [write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", graded_docs[i::3]) for i in range(3)]
    first = parse_recipe(_recipe(tmp_path / "a", inputs, models, tasks=3, workers=2))
    run_recipe(first, client=dask_client, progress=False)
    got = _buckets_by_id(f"{first.output.path}-buckets")
    assert sorted(got) == sorted(d["id"] for d in graded_docs)
    by_score = sorted(got.values(), key=lambda bs: bs[1])
    assert [b for b, _ in by_score] == sorted(b for b, _ in by_score)  # monotone in the ensemble score
    counts = np.bincount([b for b, _ in got.values()], minlength=5)
    assert counts.min() >= 20 and counts.max() <= 28  # 120 documents in 5 percentile buckets
    edges = Path(f"{first.output.path}-buckets.edges.json")
    assert edges.is_file() and '"documents": 120' in edges.read_text()

    # same recipe again on the same cluster: skipped ranks or not, the same buckets
    rerun = parse_recipe(_recipe(tmp_path / "b", inputs, models, tasks=3, workers=2))
    run_recipe(rerun, client=dask_client, progress=False)
    assert _buckets_by_id(f"{rerun.output.path}-buckets") == got

    # another cluster (one worker) and another rank count: still the same bucket for every document
    other = parse_recipe(_recipe(tmp_path / "c", inputs, models, tasks=2, workers=1))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        run_recipe(other, client=client, progress=False)
    assert _buckets_by_id(f"{other.output.path}-buckets") == got


@pytest.mark.slow
def test_bucket_ranges_become_folders(tmp_path, models, graded_docs, dask_client):
    inputs = [write_jsonl(tmp_path / "in" / "part.jsonl", graded_docs)]
    recipe = parse_recipe(
        _recipe(tmp_path, inputs, models, tasks=2, workers=2, combine="max", split_folders="ranges",
                ranges=[[0, 2], [3, 4]])
    )
    run_recipe(recipe, client=dask_client, progress=False)
    out = Path(f"{recipe.output.path}-buckets")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["buckets-00-02", "buckets-03-04"]
    low, high = read_curated(out / "buckets-00-02"), read_curated(out / "buckets-03-04")
    assert len(low) + len(high) == len(graded_docs)
    assert {d["metadata"]["quality_bucket"] for d in low} <= {0, 1, 2}
    assert {d["metadata"]["quality_bucket"] for d in high} <= {3, 4}


def test_missing_model_and_bad_ranges_are_recipe_errors(tmp_path, graded_docs):
    from pipelines.recipe import RecipeError

    inputs = [write_jsonl(tmp_path / "in" / "part.jsonl", graded_docs[:3])]
    data = _recipe(tmp_path, inputs, [tmp_path / "none.bin"] * 2, tasks=1, workers=1)
    with pytest.raises(RecipeError, match=r"quality.classifiers.0.path: no such fastText model"):
        parse_recipe(data)
    data["quality"].update(split_folders="ranges", ranges=[[0, 1], [3, 4]])
    with pytest.raises(RecipeError, match="must cover buckets 0..4"):
        parse_recipe(data, check_paths=False)


@pytest.mark.slow
def test_packaged_nemotron_cc_recipe_dedups_then_buckets(tmp_path, models, graded_docs, dask_client):
    from pipelines.recipe import load_recipe

    recipe_file = Path(__file__).parents[2] / "pipelines" / "recipes" / "nemotron-cc.yaml"
    copies = [{"id": f"copy-{d['id']}", "text": d["text"]} for d in graded_docs[:10]]
    path = write_jsonl(tmp_path / "web" / "part.jsonl", graded_docs + copies)
    recipe = load_recipe(
        recipe_file,
        overrides={
            "input": {"paths": [str(path.parent)]},
            "quality": {"classifiers": [{"path": str(m), "label": "hq", "weight": 1.0} for m in models]},
            "dedup": {"minhash": {"num_buckets": 2}},  # fewer MinHash bucket ranks: a smaller stage, same job
            "output": {"path": str(tmp_path / "curated")},
            "executor": {"tasks": 2},
        },
    )
    assert (recipe.quality.buckets, recipe.quality.combine) == (20, "max")
    run_recipe(recipe, client=dask_client, progress=False)
    out = Path(f"{recipe.output.path}-buckets")
    docs = [d for folder in sorted(out.iterdir()) if folder.is_dir() for d in read_curated(folder)]
    assert len(docs) == len(graded_docs)  # the exact copies are gone, every original is bucketed
    assert {d["metadata"]["quality_bucket"] for d in docs} <= set(range(20))
    for d in docs:
        lo, hi = (int(x) for x in d["metadata"]["quality_folder"].removeprefix("buckets-").split("-"))
        assert lo <= d["metadata"]["quality_bucket"] <= hi
