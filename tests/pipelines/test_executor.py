"""DaskPipelineExecutor on a real LocalCluster: same output as datatrove's local executor, resume, worker death,
and errors that name the rank and its log."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from datatrove.pipeline.writers import ParquetWriter

from pipelines.executor import DaskPipelineExecutor, RankFailedError, staging_root
from pipelines.recipe import parse_recipe
from pipelines.runner import make_executors
from pipelines.stages import build_stages
from tests.pipelines.conftest import write_jsonl

DOCS_PER_RANK = 240


def numbered_docs(data, rank: int, world_size: int):
    """A source step: the same documents for a rank every time it runs."""
    for i in range(DOCS_PER_RANK):
        yield Document(text=f"document {i} of rank {rank}: " + "word " * (i % 17), id=f"{rank}-{i}")


class CountRuns:
    """Leaves one file per execution of a rank, so a test can count how often each rank ran."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, data, rank: int, world_size: int):
        import uuid

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{rank}-{uuid.uuid4().hex}").touch()
        yield from data


class KillWorkerOnce:
    """SIGKILLs its own worker process half way through `rank`, the first `times` times (a marker file counts)."""

    def __init__(self, rank: int, after: int, marker: Path, times: int = 1):
        self.rank, self.after, self.marker, self.times = rank, after, marker, times

    def __call__(self, data, rank: int, world_size: int):
        for i, doc in enumerate(data):
            if rank == self.rank and i == self.after:
                kills = int(self.marker.read_text()) if self.marker.exists() else 0
                if kills < self.times:
                    self.marker.write_text(str(kills + 1))
                    os.kill(os.getpid(), signal.SIGKILL)
            yield doc


class FailOn:
    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, data, rank: int, world_size: int):
        for i, doc in enumerate(data):
            if rank == self.rank and i == 10:
                raise ValueError(f"bad document {doc.id}")
            yield doc


def rank_writer(folder: Path, **kwargs) -> ParquetWriter:
    """One parquet file per rank, named after the rank."""
    return ParquetWriter(str(folder), output_filename="${rank}.parquet", max_file_size=-1, **kwargs)


def read_ids(folder: Path) -> list[str]:
    ids: list[str] = []
    for file in sorted(folder.glob("*.parquet")):
        ids += pq.read_table(file, columns=["id"]).column("id").to_pylist()
    return ids


def test_recipe_output_equals_local_executor(tmp_path, dask_client, prose_docs):
    """All stages of a recipe (filters, datatrove's exact and MinHash dedup) on Dask give byte-identical files to
    datatrove's LocalPipelineExecutor."""
    docs = [dict(d, text=d["text"][:4000]) for d in prose_docs[:24]]
    docs += [dict(d, id=d["id"] + "-copy") for d in docs[:4]]
    for i in range(3):
        write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", docs[i::3])
    outputs = {}
    for kind in ("dask", "local"):
        recipe = parse_recipe(
            {
                "input": {"paths": [str(tmp_path / "in")]},
                "filters": [{"gopher_repetition": {}}],
                "output": {
                    "path": str(tmp_path / kind / "curated"),
                    "work_dir": str(tmp_path / kind / "work"),
                },
                "executor": {"tasks": 3, "workers": 1},
                "dedup": {"engine": "datatrove"},  # a fixed list of stages, as make_executors needs
            }
        )
        stages = build_stages(recipe)
        assert [s.name for s in stages][-1] == "minhash-filter"
        executors = make_executors(recipe, stages, kind=kind, client=dask_client, progress=False)
        executors[-1].run()
        outputs[kind] = tmp_path / kind / "curated"

    names = sorted(p.name for p in outputs["dask"].iterdir())
    assert names == sorted(p.name for p in outputs["local"].iterdir())
    assert names  # something was written
    for name in names:
        assert (outputs["dask"] / name).read_bytes() == (outputs["local"] / name).read_bytes()
    ids = read_ids(outputs["dask"])
    assert len(ids) == len(set(ids))
    assert len(ids) <= 24  # the exact copies went
    assert not Path(staging_root(_folder(outputs["dask"]))).exists()


def _folder(path: Path):
    from datatrove.io import get_datafolder

    return get_datafolder(str(path))


def test_rerun_skips_completed_ranks(tmp_path, dask_client):
    runs = tmp_path / "runs"
    logs = tmp_path / "logs"

    def executor() -> DaskPipelineExecutor:
        return DaskPipelineExecutor(
            [numbered_docs, CountRuns(runs), rank_writer(tmp_path / "out")],
            tasks=4,
            logging_dir=str(logs),
            client=dask_client,
        )

    executor().run()
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["0", "1", "2", "3"]

    # as if rank 2 had crashed: no completion marker, no output
    (logs / "completions" / "00002").unlink()
    (tmp_path / "out" / "00002.parquet").unlink()
    stats = executor().run()
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["0", "1", "2", "2", "3"]
    assert len(read_ids(tmp_path / "out")) == 4 * DOCS_PER_RANK
    # merged stats cover every rank, including the three completed by the first run
    writer_stats = stats.stats[-1].stats
    assert writer_stats["total"].total == 4 * DOCS_PER_RANK

    executor().run()  # nothing left to do
    assert len(list(runs.iterdir())) == 5


@pytest.fixture(scope="module")
def kill_client():
    """A cluster of its own for the tests that kill workers: the shared one keeps its warm workers (spaCy loaded)."""
    import dask
    from distributed import Client, LocalCluster

    # one task at a time per worker, so a death takes down only the rank it was running
    with (
        dask.config.set({"distributed.scheduler.worker-saturation": 1.0}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def set_allowed_failures(client, n: int) -> None:
    def apply(dask_scheduler, n=n):
        dask_scheduler.allowed_failures = n

    client.run_on_scheduler(apply)


def test_killed_worker_gives_complete_output_without_duplicates(tmp_path, kill_client):
    marker = tmp_path / "killed-once"
    out = tmp_path / "out"
    executor = DaskPipelineExecutor(
        [
            numbered_docs,
            # the writer flushes every 50 documents, so the killed attempt has left a partial file behind
            rank_writer(out, batch_size=50),
            KillWorkerOnce(rank=1, after=150, marker=marker),
        ],
        tasks=4,
        logging_dir=str(tmp_path / "logs"),
        client=kill_client,
    )
    set_allowed_failures(kill_client, 3)
    executor.run()
    assert marker.read_text() == "1", "the worker running rank 1 was never killed"
    ids = read_ids(out)
    assert len(ids) == len(set(ids)) == 4 * DOCS_PER_RANK
    assert sorted(p.name for p in out.iterdir()) == [f"{r:05d}.parquet" for r in range(4)]
    assert sorted(p.name for p in (tmp_path / "logs" / "completions").iterdir()) == [
        f"{r:05d}" for r in range(4)
    ]
    assert not Path(staging_root(_folder(out))).exists()


def test_rank_whose_worker_dies_for_good_fails_and_leaves_no_partial_output(tmp_path, kill_client):
    out = tmp_path / "out"
    executor = DaskPipelineExecutor(
        [
            numbered_docs,
            rank_writer(out, batch_size=50),
            KillWorkerOnce(rank=0, after=150, marker=tmp_path / "m"),
        ],
        tasks=2,
        logging_dir=str(tmp_path / "logs"),
        client=kill_client,
    )
    set_allowed_failures(kill_client, 0)  # no second chance: the first death fails the rank
    kill_client.wait_for_workers(2, timeout=60)
    with pytest.raises(RankFailedError) as info:
        executor.run()
    assert "rank 0: KilledWorker" in str(info.value)
    # the dead attempt had flushed 150 documents; none of them reached the output folder
    assert not (out / "00000.parquet").exists()
    assert not (tmp_path / "logs" / "completions" / "00000").exists()


def test_exception_fails_the_run_naming_rank_and_log(tmp_path, dask_client):
    out, logs = tmp_path / "out", tmp_path / "logs"
    executor = DaskPipelineExecutor(
        [numbered_docs, FailOn(rank=2), rank_writer(out)],
        tasks=4,
        logging_dir=str(logs),
        client=dask_client,
    )
    with pytest.raises(RankFailedError) as info:
        executor.run()
    message = str(info.value)
    log = logs / "logs" / "task_00002.log"
    assert "rank 2" in message and "ValueError: bad document 2-10" in message
    assert str(log) in message
    assert "bad document 2-10" in log.read_text()
    # the other ranks finished and were committed; the failed rank left nothing behind
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001", "00003"]
    assert sorted(p.name for p in out.iterdir()) == ["00000.parquet", "00001.parquet", "00003.parquet"]
    assert info.value.failures[0][0] == 2


def test_depends_runs_the_earlier_stage_first(tmp_path, dask_client):
    first = DaskPipelineExecutor(
        [numbered_docs, rank_writer(tmp_path / "a")],
        tasks=2,
        logging_dir=str(tmp_path / "logs-a"),
        client=dask_client,
    )
    from pipelines.readers import RankFileReader

    second = DaskPipelineExecutor(
        [RankFileReader(str(tmp_path / "a")), rank_writer(tmp_path / "b")],
        tasks=2,
        logging_dir=str(tmp_path / "logs-b"),
        client=dask_client,
        depends=first,
    )
    second.run()
    assert sorted(read_ids(tmp_path / "b")) == sorted(read_ids(tmp_path / "a"))
    assert len(read_ids(tmp_path / "b")) == 2 * DOCS_PER_RANK
