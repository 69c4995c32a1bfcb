"""`longtrove demo`: the sample corpus is real text plus planted duplicates and junk, and every step of the
default recipe removes something from it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines import demo
from pipelines.cli import app
from pipelines.runner import read_curated


def count_curated(ctx: demo.DemoContext) -> dict:
    """A later demo stage, as the shard and long-context stages plug in."""
    return {"documents": len(read_curated(ctx.curated_dir))}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, dask_client):
    stages = list(demo.DEMO_STAGES)
    # only curation is under test here; the later stages have tests of their own
    demo.DEMO_STAGES[:] = [("count", f"{__name__}:count_curated")]
    try:
        yield demo.run_demo(
            tmp_path_factory.mktemp("demo"), client=dask_client, progress=False, echo=lambda s: None
        )
    finally:
        demo.DEMO_STAGES[:] = stages


def test_every_step_removes_something(demo_run):
    dropped = {row.step: row.dropped for row in demo_run.counts}
    assert set(dropped) == {
        "Jsonl (checked)", "Gopher Repetition", "Gopher Quality", "C4 Quality", "FineWeb Quality",
        "exact-deduplication stage 3", "MinHash filter",
    }  # fmt: skip
    assert all(n > 0 for n in dropped.values()), dropped
    reader = demo_run.counts[0]
    assert reader.detail == {"bad_utf8": 1, "bad_json": 1, "missing_text": 1, "empty": 1}


def test_planted_duplicates_and_junk_are_gone(demo_run):
    curated = read_curated(demo_run.curated_dir)
    ids = [d["id"] for d in curated]
    texts = [d["text"] for d in curated]
    assert len(ids) == len(set(ids)) and len(texts) == len(set(texts))
    assert not set(ids) & set(demo_run.planted["junk"] + demo_run.planted["bad"])
    # each planted copy or its original is kept, never both
    for planted in demo_run.planted["exact_dup"] + demo_run.planted["near_dup"]:
        original = planted.split("-of-", 1)[1]
        assert (planted in ids) + (original in ids) == 1, planted
    exact_row = next(r for r in demo_run.counts if r.step.startswith("exact"))
    minhash_row = next(r for r in demo_run.counts if r.step.startswith("MinHash"))
    assert exact_row.dropped == len(demo_run.planted["exact_dup"])
    assert minhash_row.dropped == len(demo_run.planted["near_dup"])
    assert demo_run.results["count"] == {"documents": len(curated)}


def test_corpus_is_real_text_and_reproducible(tmp_path):
    planted_a = demo.build_corpus(tmp_path / "a", seed=3)
    planted_b = demo.build_corpus(tmp_path / "b", seed=3)
    assert planted_a == planted_b
    for part in sorted((tmp_path / "a").glob("*.jsonl")):
        assert part.read_bytes() == (tmp_path / "b" / part.name).read_bytes()
    lines = [
        line for part in sorted((tmp_path / "a").glob("*.jsonl")) for line in part.read_bytes().splitlines()
    ]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    topics = [r for r in records if r.get("id", "").startswith("pydoc-topic/")]
    assert len(topics) >= 70  # Python's own documentation topics, as shipped
    assert sum(len(r.get("text", "")) for r in records) > 500_000


def test_demo_help():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--out" in result.output
