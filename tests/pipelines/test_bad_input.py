"""Each kind of bad input gets a clear error naming file and line, or is skipped and counted, and never takes
good documents with it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.executor import RankFailedError
from pipelines.recipe import RecipeError, parse_recipe
from pipelines.runner import read_curated, run_recipe
from tests.pipelines.conftest import simple_recipe, write_jsonl

GOOD = [{"id": f"good-{i}", "text": f"Good document number {i}, with a few words of text."} for i in range(6)]


def run(tmp_path, client, inputs, **extra):
    recipe = parse_recipe(simple_recipe([str(p) for p in inputs], tmp_path, **extra))
    rows = run_recipe(recipe, client=client, progress=False)
    reader = rows[0]
    return reader, sorted(d["id"] for d in read_curated(recipe.output.path))


BAD_LINES = {
    "bad_utf8": b'{"id": "bad", "text": "caf\xe9 au lait"}',
    "bad_json": b'{"id": "bad", "text": "no closing quote}',
    "missing_text": b'{"id": "bad", "content": "text under another key"}',
    "empty": b'{"id": "bad", "text": ""}',
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_jsonl_record_is_skipped_and_counted(tmp_path, dask_client, reason):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [*GOOD[:3], BAD_LINES[reason], *GOOD[3:]])
    reader, ids = run(tmp_path, dask_client, [path])
    assert ids == sorted(d["id"] for d in GOOD)
    assert reader.detail == {reason: 1}
    assert reader.dropped == 1 and reader.kept == len(GOOD)


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_jsonl_record_fails_naming_file_and_line(tmp_path, dask_client, reason):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [*GOOD[:3], BAD_LINES[reason], *GOOD[3:]])
    with pytest.raises(RankFailedError) as info:
        run(tmp_path, dask_client, [path], input={"on_bad_record": "fail"})
    message = str(info.value)
    assert f"{path}:4: {reason}" in message
    assert "BadInputError" in message and "task_0000" in message


def test_whitespace_only_document_counts_as_empty(tmp_path, dask_client):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [*GOOD, {"id": "blank", "text": " \n\t "}])
    reader, ids = run(tmp_path, dask_client, [path])
    assert reader.detail == {"empty": 1}
    assert ids == sorted(d["id"] for d in GOOD)


def test_truncated_parquet_is_skipped_and_counted_other_files_kept(tmp_path, dask_client):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(GOOD), folder / "a-good.parquet")
    pq.write_table(
        pa.Table.from_pylist([{"id": f"lost-{i}", "text": "x y z"} for i in range(50)]), folder / "b.parquet"
    )
    data = (folder / "b.parquet").read_bytes()
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])  # cut in the middle: no footer
    reader, ids = run(tmp_path, dask_client, [folder], input={"format": "parquet"}, executor={"tasks": 1})
    assert ids == sorted(d["id"] for d in GOOD)
    assert reader.detail == {"bad_file": 1}


def test_truncated_parquet_fails_naming_the_file(tmp_path, dask_client):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(GOOD), folder / "b.parquet")
    (folder / "b.parquet").write_bytes((folder / "b.parquet").read_bytes()[:100])
    with pytest.raises(RankFailedError) as info:
        run(tmp_path, dask_client, [folder], input={"format": "parquet", "on_bad_record": "fail"})
    assert f"{folder / 'b.parquet'}: bad_file: unreadable parquet" in str(info.value)


def test_nonexistent_input_path_is_named_before_anything_runs(tmp_path):
    present = write_jsonl(tmp_path / "in" / "part.jsonl", GOOD)
    missing = tmp_path / "no-such-folder"
    with pytest.raises(RecipeError) as info:
        parse_recipe(simple_recipe([present, missing], tmp_path))
    assert f"input.paths.1: no such file or folder {str(missing)!r}" in str(info.value)
    assert not (tmp_path / "work").exists()


def test_input_folder_without_matching_files_is_named(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not data")
    with pytest.raises(RecipeError) as info:
        parse_recipe(simple_recipe([tmp_path / "in"], tmp_path, input={"glob": "*.jsonl"}))
    assert f"input.paths.0: no files matching input.glob '*.jsonl' in {str(tmp_path / 'in')!r}" in str(
        info.value
    )


def test_single_50mb_document(tmp_path, dask_client):
    huge = "All work and no play makes a very long document. " * (50 * 2**20 // 50)
    assert len(huge) >= 50 * 10**6
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [GOOD[0], {"id": "huge", "text": huge}, *GOOD[1:]])

    # the default limit skips it and counts it, the good documents around it stay
    reader, ids = run(tmp_path / "default", dask_client, [path])
    assert reader.detail == {"too_long": 1}
    assert ids == sorted(d["id"] for d in GOOD)

    # with the limit raised it goes through whole
    recipe = parse_recipe(
        simple_recipe([path], tmp_path / "raised", input={"max_document_chars": 60_000_000})
    )
    run_recipe(recipe, client=dask_client, progress=False)
    docs = {d["id"]: d["text"] for d in read_curated(recipe.output.path)}
    assert sorted(docs) == sorted(["huge", *(d["id"] for d in GOOD)])
    assert docs["huge"] == huge


def test_fsspec_url_input(tmp_path, dask_client):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", GOOD)
    reader, ids = run(tmp_path, dask_client, [f"file://{path.parent}"])
    assert ids == sorted(d["id"] for d in GOOD) and reader.dropped == 0
