"""curate deals every input file over the ranks as one list: several single-file inputs keep every rank busy,
and the curated documents are the same as when the same files are given as one folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.recipe import parse_recipe
from pipelines.runner import run_recipe
from tests.pipelines.conftest import simple_recipe, write_jsonl

RANKS = 4


def _reader_stats(work: Path, rank: int) -> dict:
    """The readers' stats of one rank of the filter stage as datatrove saved them, summed over reader steps."""
    saved = json.loads((work / "logs" / "filter" / "stats" / f"{rank:05d}.json").read_text())
    totals: dict = {}
    for step in saved:
        if "Jsonl" in step["name"]:
            for key, value in step["stats"].items():
                totals[key] = totals.get(key, 0) + (value["total"] if isinstance(value, dict) else value)
    return totals


def _curate(inputs: list[str], out: Path, client) -> None:
    recipe = simple_recipe(inputs, out, input={"on_bad_record": "skip"})
    recipe["executor"]["tasks"] = RANKS
    run_recipe(parse_recipe(recipe), client=client, progress=False)


def test_single_file_inputs_are_dealt_one_per_rank_like_a_folder(
    tmp_path: Path, dask_client, prose_docs
) -> None:
    folder = tmp_path / "in"
    files = []
    for i in range(RANKS):
        docs = [{"id": f"file{i}-{d['id']}", "text": d["text"]} for d in prose_docs[i * 8 : (i + 1) * 8]]
        files.append(write_jsonl(folder / f"part-{i}.jsonl", [*docs, b'{"id": "broken", "text": }']))
    # plain paths and a file:// URL of the same filesystem: one list, dealt in the order given
    inputs = [str(files[0]), f"file://{files[1]}", str(files[2]), str(files[3])]

    _curate(inputs, tmp_path / "files", dask_client)
    _curate([str(folder)], tmp_path / "folder", dask_client)

    for rank in range(RANKS):
        stats = _reader_stats(tmp_path / "files" / "work", rank)
        # each rank read exactly one file, and the reader still skips and counts the bad line under its name
        assert stats["input_files"] == 1 and stats["documents"] == 8 and stats["bad_input/bad_json"] == 1, (
            stats
        )
        ids = pq.read_table(tmp_path / "files" / "curated" / f"{rank:05d}.parquet").column("id").to_pylist()
        assert len(ids) == 8 and all(doc_id.startswith(f"file{rank}-") for doc_id in ids), (rank, ids)
        # the same files given as one folder give byte-identical curated files
        same = tmp_path / "folder" / "curated" / f"{rank:05d}.parquet"
        assert (tmp_path / "files" / "curated" / f"{rank:05d}.parquet").read_bytes() == same.read_bytes()


def test_files_of_several_filesystems_are_numbered_in_one_list(tmp_path: Path) -> None:
    import uuid

    import fsspec

    from pipelines.readers import dealt_input_files

    memory, base = fsspec.filesystem("memory"), f"/dealt-{uuid.uuid4().hex}"
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        memory.pipe(f"{base}/in/{name}", b'{"text": "x"}\n')
    local = [write_jsonl(tmp_path / f"{name}.jsonl", [{"text": "x"}]) for name in ("one", "two")]

    dealt = dealt_input_files(
        [str(local[0]), f"memory://{base}/in", str(local[1]), f"memory://{base}/in/a.jsonl"], "*.jsonl"
    )

    numbered = sorted((n, folder.resolve_paths(path)) for folder, files in dealt for n, path in files)
    # in the order given, a folder's files sorted, the glob applied inside folders, a file named twice read once
    names = [path.rpartition("/")[2] for _, path in numbered]
    assert names == ["one.jsonl", "a.jsonl", "b.jsonl", "two.jsonl"]
    assert [n for n, _ in numbered] == [0, 1, 2, 3]
    assert len(dealt) == 2 and all(folder.isfile(path) for folder, files in dealt for _, path in files)
