"""The packaged long-context-phase recipe, run with small lengths: long documents packed into one folder, the rest
into another, and the mixture streaming them in the recipe's alternation, every sample exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.recipe import load_recipe
from pipelines.runner import run_recipe

RECIPE = Path(__file__).parents[2] / "pipelines" / "recipes" / "long-context-phase.yaml"
LONG, SHORT = 2048, 64  # stand-ins for 1,048,576 and 4,096: the same recipe, lengths a test can fill


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, prose_docs) -> tuple[Path, list[str], list[str]]:
    """Six long documents (several topics joined) and 300 short pieces, as two parquet files."""
    texts = [d["text"] for d in prose_docs]
    long_docs = ["\n\n".join(texts[i::6]) for i in range(6)]
    pieces = [t[s : s + 700] for t in texts for s in range(0, len(t) - 700, 700)][:300]
    folder = tmp_path_factory.mktemp("lc-corpus")
    pq.write_table(pa.table({"id": [f"long-{i}" for i in range(6)], "text": long_docs}), folder / "a.parquet")
    pq.write_table(pa.table({"id": [f"short-{i}" for i in range(len(pieces))], "text": pieces}),
                   folder / "b.parquet")
    return folder, long_docs, pieces


@pytest.mark.slow
def test_long_context_phase_packs_two_lengths_and_streams_the_configured_alternation(
    tmp_path, corpus, bpe_tokenizer_path, dask_client
):
    from packing.format import read_index
    from pipelines.curation.shards import open_mixture
    from tokenization import load_tokenizer

    folder, long_docs, pieces = corpus
    tokenizer = load_tokenizer(str(bpe_tokenizer_path))
    assert tokenizer.count_batch(long_docs).min() >= LONG  # every long document fills a row on its own
    assert tokenizer.count_batch(pieces).max() < LONG

    packaged = load_recipe(RECIPE, check_paths=False)
    shards = []
    for target in packaged.shards:  # the packaged targets, with lengths and places a test can use
        target_map = target.model_dump()
        long = target.config["seq_len"] == 1_048_576
        target_map["config"].update(
            output_folder=str(tmp_path / target.name), tokenizer=str(bpe_tokenizer_path),
            seq_len=LONG if long else SHORT,
        )
        if long:
            target_map["min_tokens"] = LONG
        else:
            target_map["max_tokens"] = LONG - 1
        shards.append(target_map)
    recipe = load_recipe(
        RECIPE,
        overrides={
            "input": {"paths": [str(folder)]},
            "output": {"path": str(tmp_path / "curated")},
            "shards": shards,
            "mixture": {"path": str(tmp_path / "mixture.json")},
            "executor": {"tasks": 2},
        },
    )
    weights = [s.weight for s in recipe.mixture.sources]
    assert weights == [1, 256]  # the packaged alternation, unchanged
    run_recipe(recipe, client=dask_client, progress=False)

    long_index, short_index = read_index(tmp_path / "1m"), read_index(tmp_path / "4k")
    assert (long_index["seq_len"], short_index["seq_len"]) == (LONG, SHORT)
    assert long_index["stats"]["documents"] == len(long_docs)
    assert short_index["stats"]["documents"] == len(pieces)
    long_rows = sum(s["rows"] for s in long_index["shards"])
    short_rows = sum(s["rows"] for s in short_index["shards"])
    assert short_rows >= 3 * 256  # enough 4K rows for several full periods

    stream = open_mixture(tmp_path / "mixture.json", with_index=True)
    samples = list(stream)
    sources = np.array([int(s["source_id"]) for s in samples])
    seen = [(int(s["source_id"]), int(s["sample_id"])) for s in samples]
    assert len(set(seen)) == len(seen)  # nothing twice
    assert all(len(s["input_ids"]) == (LONG if src == 0 else SHORT) for s, src in zip(samples, sources, strict=True))
    long_positions = np.flatnonzero(sources == 0)
    assert len(long_positions) >= 3
    assert np.all(np.diff(long_positions) == 257)  # one 1M row in every period of 1 + 256 slots
    full = len(sources) // 257 * 257
    for block in sources[:full].reshape(-1, 257):
        assert (block == 0).sum() == 1 and (block == 1).sum() == 256
    # the epoch ends when one source has given every sample once: here that is one of the two folders
    counts = np.bincount(sources, minlength=2)
    assert counts[0] == long_rows or counts[1] == short_rows
