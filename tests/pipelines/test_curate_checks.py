"""`longtrove curate` refuses a text_key that the inputs do not have before anything runs, and an empty curated
output is an error, not a success."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tests.pipelines.conftest import simple_recipe, write_jsonl


def _curate(tmp_path: Path, recipe: dict, client, name: str = "recipe.yaml"):
    from pipelines.cli import app

    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    args = ["curate", str(path), "--no-progress", "--scheduler", client.scheduler.address]
    return CliRunner(env={"COLUMNS": "400"}).invoke(app, args)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_wrong_text_key_is_refused_up_front_naming_file_and_field(
    tmp_path: Path, prose_docs: list[dict], fmt: str, dask_client
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for part in range(2):
        rows = prose_docs[part:20:2]
        if fmt == "jsonl":
            write_jsonl(folder / f"part-{part}.jsonl", rows)
        else:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{part}.parquet")
    recipe = simple_recipe([folder], tmp_path)
    recipe["input"].update(format=fmt, text_key="body")

    result = _curate(tmp_path, recipe, dask_client)

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and f"part-0.{fmt}" in lines[0]
        and "'body'" in lines[0]
        and "input.text_key" in lines[0]
    )
    assert not (tmp_path / "work").exists()  # refused before any stage ran


def test_a_curation_that_keeps_nothing_fails_and_one_that_keeps_documents_counts_them(
    tmp_path: Path, prose_docs: list[dict], dask_client
) -> None:
    source = write_jsonl(tmp_path / "in" / "docs.jsonl", prose_docs[:12])
    strict = simple_recipe(
        [source], tmp_path / "strict", filters=[{"gopher_quality": {"min_doc_words": 10_000_000}}]
    )
    result = _curate(tmp_path, strict, dask_client, "strict.yaml")
    assert result.exit_code == 1, result.output
    assert "gopher_short_doc" in result.stdout  # the table says why
    assert "error: no document was curated" in result.stderr and "curated documents:" not in result.stdout

    # one record without the text field first: with on_bad_record skip it is counted, not taken for a wrong key
    mixed = write_jsonl(tmp_path / "in2" / "docs.jsonl", [{"id": "x", "body": "elsewhere"}, *prose_docs[:12]])
    kept = _curate(tmp_path, simple_recipe([mixed], tmp_path / "all"), dask_client, "all.yaml")
    assert kept.exit_code == 0, kept.output
    assert f"curated documents: {tmp_path / 'all' / 'curated'} (12 documents)" in kept.stdout
    assert "missing_text: 1" in kept.stdout
