"""The demo's long-context stage: a suite from curated documents, run against the reference server, reported."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.longctx_demo import DEMO_DEPTHS, DEMO_LENGTHS, DEMO_TASKS, demo_stage


def test_demo_stage_builds_exact_prompts_and_scores_by_depth(tmp_path: Path, prose_texts, bpe_tokenizer_path):
    curated = tmp_path / "curated"
    curated.mkdir()
    pq.write_table(pa.table({"text": prose_texts[:40]}), curated / "00000.parquet")
    pq.write_table(pa.table({"text": prose_texts[40:80]}), curated / "00001.parquet")
    ctx = SimpleNamespace(
        out_dir=tmp_path, curated_dir=curated, results={"shards": {"tokenizer": str(bpe_tokenizer_path)}}
    )

    result = demo_stage(ctx)

    assert result["samples"] == len(DEMO_TASKS) * len(DEMO_LENGTHS) * len(DEMO_DEPTHS)
    for path in sorted((tmp_path / "longctx" / "suite").glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            assert sample["token_count"] == sample["length"] - sample["reserve"], path
    summary = json.loads((tmp_path / "longctx" / "results" / "summary.json").read_text())
    assert Path(result["report"]).is_file() and summary["average"] == result["average"]
    # The reference server reads only the last 1,024 tokens: a needle at the end is found, one at the start is not.
    for task in ("niah_single_1", "niah_multikey_1"):
        for length in DEMO_LENGTHS:
            by_depth = summary["depths"][task][str(length)]
            assert by_depth["100"] == 100.0 and by_depth["0"] == 0.0, (task, length, by_depth)
    for task in DEMO_TASKS:
        assert (tmp_path / "longctx" / "results" / f"heatmap_{task}.png").stat().st_size > 0

    # a second demo into the same folder scores the suite again and reports the same numbers
    assert demo_stage(ctx) == result
