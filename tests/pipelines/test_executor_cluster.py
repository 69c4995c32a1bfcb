"""A cluster made of separate processes: `dask scheduler` and two `dask worker`s on loopback, reached by address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datatrove.pipeline.writers import ParquetWriter

from pipelines.executor import DaskPipelineExecutor
from pipelines.readers import GuardedJsonlReader
from tests.pipelines.conftest import write_jsonl

DASK = str(Path(sys.executable).with_name("dask"))


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # a process group of its own, so teardown reaches any child the command starts
    return subprocess.Popen(
        [DASK, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def scheduler_address(tmp_path):
    info = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(info),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        for i in range(2):
            procs.append(
                _start(
                    [
                        "worker",
                        "--scheduler-file",
                        str(info),
                        "--host",
                        "127.0.0.1",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                    ],
                    tmp_path / f"worker-{i}.log",
                )
            )
        deadline = time.monotonic() + 90
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info.exists(), (tmp_path / "scheduler.log").read_text()
        yield json.loads(info.read_text())["address"]
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_pipeline_through_scheduler_address(tmp_path, scheduler_address, prose_docs):
    from distributed import Client

    assert scheduler_address.startswith("tcp://127.0.0.1:")
    for i in range(4):
        write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", prose_docs[i::4])
    with Client(scheduler_address) as client:
        client.wait_for_workers(2, timeout=90)
        workers = client.scheduler_info()["workers"]
        assert sorted(w["name"] for w in workers.values()) == ["w0", "w1"]

    executor = DaskPipelineExecutor(
        [
            GuardedJsonlReader(str(tmp_path / "in")),
            ParquetWriter(str(tmp_path / "out"), output_filename="${rank}.parquet", max_file_size=-1),
        ],
        tasks=4,
        logging_dir=str(tmp_path / "logs"),
        scheduler=scheduler_address,
    )
    stats = executor.run()
    ids = []
    for file in sorted((tmp_path / "out").glob("*.parquet")):
        ids += pq.read_table(file, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(d["id"] for d in prose_docs)
    assert stats.stats[-1].stats["total"].total == len(prose_docs)
    assert sorted(p.name for p in (tmp_path / "logs" / "completions").iterdir()) == [
        f"{r:05d}" for r in range(4)
    ]
