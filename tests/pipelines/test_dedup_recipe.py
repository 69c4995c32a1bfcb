"""The recipe's partitioned dedup on a real Dask cluster: planted copies go, a killed worker and a resumed run
change nothing in the output."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

from pipelines.dedup.components import components_removed
from pipelines.dedup.minhash import band_edges, band_keys, node_ids, permutations, signatures
from pipelines.dedup.shingles import Shingler
from pipelines.recipe import parse_recipe
from pipelines.runner import read_curated, run_recipe
from pipelines.stages import build_stages
from tests.pipelines.conftest import write_jsonl
from tests.pipelines.test_executor import KillWorkerOnce, set_allowed_failures

TASKS = 3


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 100)):  # about 1% of the words replaced
        words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma"])
    return " ".join(words)


def corpus(folder: Path, prose_docs: list[dict]) -> tuple[set[str], set[str]]:
    """Originals, exact copies, near copies and a chain of near copies of near copies, in TASKS files."""
    rng = random.Random(11)
    originals = [d for d in prose_docs if 2000 < len(d["text"]) < 6000][:24]
    records = list(originals)
    copies = set()
    for d in originals[:4]:
        records.append({"id": d["id"] + "#copy", "text": d["text"]})
    for d in originals[4:10]:
        records.append({"id": d["id"] + "#near", "text": near_copy(d["text"], rng)})
    text = originals[10]["text"]
    for step in range(4):
        text = near_copy(text, rng)
        records.append({"id": f"{originals[10]['id']}#chain{step}", "text": text})
    copies = {r["id"] for r in records[len(originals) :]}
    rng.shuffle(records)
    for i in range(TASKS):
        write_jsonl(folder / f"part-{i}.jsonl", records[i::TASKS])
    return {d["id"] for d in originals}, copies


def recipe_for(tmp_path: Path, inputs: Path):
    return parse_recipe(
        {
            "input": {"paths": [str(inputs)], "glob": "*.jsonl"},
            "dedup": {"partitions": 4},
            "output": {"path": str(tmp_path / "curated"), "work_dir": str(tmp_path / "work")},
            "executor": {"tasks": TASKS},
        }
    )


def test_partitioned_dedup_end_to_end_with_killed_worker_and_resume(tmp_path, dask_client, prose_docs):
    originals, copies = corpus(tmp_path / "in", prose_docs)
    recipe = recipe_for(tmp_path, tmp_path / "in")
    stages = build_stages(recipe)
    marker = tmp_path / "killed"
    stages[0].pipeline.insert(-1, KillWorkerOnce(rank=1, after=5, marker=marker))  # before the band keys
    set_allowed_failures(dask_client, 3)
    rows = run_recipe(recipe, client=dask_client, progress=False, stages=stages)
    assert marker.read_text() == "1"

    curated = read_curated(tmp_path / "curated")
    ids = [d["id"] for d in curated]
    # one document of each group of copies stays (the first in rank order, which may be a copy)
    assert sorted(i.partition("#")[0] for i in ids) == sorted(originals)
    stage_names = [r.stage for r in rows]
    assert stage_names[-1] == "minhash-filter"
    logs = tmp_path / "work" / "logs"
    rounds = sorted(p.name for p in logs.iterdir() if p.name.startswith("minhash-small-"))
    assert rounds and (logs / "minhash-removals").is_dir()
    for stage in ("exact-find", "minhash-buckets", "minhash-removals", *rounds):
        assert len(list((logs / stage / "completions").iterdir())) == 4  # partitions, not one task

    # the removed documents are those a single process finds from the same signatures
    kept_after_exact = read_curated(tmp_path / "work" / "exact-kept")
    assert len(kept_after_exact) == len(originals) + len(copies) - 4
    assert _single_process_removed(tmp_path / "work" / "exact-kept") == {
        d["id"] for d in kept_after_exact
    } - set(ids)

    # a run killed after its first round: the rerun redoes only what is missing and gives the same files
    before = {p.name: p.read_bytes() for p in (tmp_path / "curated").iterdir()}
    for stage in [*rounds[1:], "minhash-removals", "minhash-filter"]:
        shutil.rmtree(logs / stage, ignore_errors=True)
    shutil.rmtree(tmp_path / "curated")
    (logs / rounds[0] / "completions" / "00002").unlink()
    filter_stats = (logs / "filter" / "stats.json").stat().st_mtime_ns
    run_recipe(recipe, client=dask_client, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "curated").iterdir()} == before
    assert (logs / "filter" / "stats.json").stat().st_mtime_ns != filter_stats  # stats merged again...
    assert len(list((logs / "filter" / "logs").iterdir())) == TASKS  # ...but no filter rank ran again


def _single_process_removed(folder: Path) -> set[str]:
    """Signatures, band keys, edges and components of one folder of rank files, all in this process."""
    shingler, (a, b) = Shingler(), permutations(112, 1)
    keys, ids = [], {}
    for rank in range(TASKS):
        docs = _rank_docs(folder, rank)
        batch = shingler.shingles([d["text"] for d in docs])
        has = np.flatnonzero(np.diff(batch.offsets))
        k1, k2 = band_keys(signatures(batch.hashes, batch.offsets, a, b), 14)
        nodes = np.repeat(node_ids(rank, has), 14)
        keys.append((k1.reshape(-1), k2.reshape(-1), nodes))
        ids.update({int(node_ids(rank, np.array([i]))[0]): d["id"] for i, d in enumerate(docs)})
    k1, k2, nodes = (np.concatenate(parts) for parts in zip(*keys, strict=True))
    return {ids[int(n)] for n in components_removed(band_edges(k1, k2, nodes))}


def _rank_docs(folder: Path, rank: int) -> list[dict]:
    import pyarrow.parquet as pq

    path = folder / f"{rank:05d}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []
