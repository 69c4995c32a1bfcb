"""Run datatrove pipelines rank by rank on Dask, with outputs that are all-or-nothing per rank.

datatrove writers write straight to their final file names, so a rank that dies half way leaves a file that looks
finished, and a rank that Dask runs again after a worker died could leave two versions behind. Here every output
folder of a rank (writers, dedup signatures, bucket and cluster files) is redirected to a private staging folder for
that attempt; only when the whole rank has succeeded are its files renamed into place, and only then is the rank
marked complete. A killed attempt leaves its files in staging, where no reader looks, and the next attempt clears
them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

from datatrove.executor.base import DistributedEnvVars, PipelineExecutor
from datatrove.io import DataFolder, DataFolderLike
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.stats import PipelineStats

STAGING_SUFFIX = ".longtrove-staging"
_MAX_ERROR_CHARS = 300  # of a rank's error on the terminal; the whole error is in the rank's log


class RankFailedError(RuntimeError):
    """One or more ranks raised; the message names each rank, its exception and its log file."""

    def __init__(self, stage: str, failures: list[tuple[int, str, str]]):
        self.stage = stage
        self.failures = failures
        lines = [f"{len(failures)} rank(s) of stage {stage!r} failed:"]
        lines += [f"  rank {rank}: {error} (log: {log})" for rank, error, log in failures]
        super().__init__("\n".join(lines))


def staging_root(final: DataFolder) -> str:
    """Where attempts of ranks writing into `final` stage their files: a hidden sibling of the folder."""
    path = final.path.rstrip("/")
    parent, _, name = path.rpartition("/")
    if not name:  # a bucket root has no parent to hold a sibling
        return f"{path}/{STAGING_SUFFIX}"
    return f"{parent}/.{name}{STAGING_SUFFIX}" if parent else f".{name}{STAGING_SUFFIX}"


class StagedDataFolder(DataFolder):
    """A DataFolder whose writes land in a staging folder and whose reads fall back to the final folder.

    Steps that read back what they wrote earlier in the same rank (MinHash signatures sort their own files) find
    the staged copy; steps that look for results of an earlier run (MinHash skips signatures already written) find
    the final copy.
    """

    def __init__(self, final: DataFolder, tag: str):
        super().__init__(path=f"{staging_root(final)}/{tag}", fs=final.fs, auto_mkdir=final.auto_mkdir)
        self.final = final
        self.tag = tag

    def _staged(self, path: str) -> bool:
        return super().exists(path)

    def open(self, path, mode="rb", *args, **kwargs):
        if "r" in mode and "+" not in mode and not self._staged(path):
            return self.final.open(path, mode, *args, **kwargs)
        return super().open(path, mode, *args, **kwargs)

    def exists(self, path, **kwargs) -> bool:
        return self._staged(path) or self.final.exists(path, **kwargs)

    def isfile(self, path) -> bool:
        return super().isfile(path) or self.final.isfile(path)

    def size(self, path):
        return super().size(path) if self._staged(path) else self.final.size(path)

    def commit(self) -> int:
        """Move every staged file to its final name (a rename on local disks) and drop the staging folder."""
        fs = self.fs
        if not fs.exists(self.path):
            return 0
        moved = 0
        for rel in self.list_files():
            target = self.final._join(rel)
            fs.makedirs(fs._parent(target), exist_ok=True)
            fs.mv(self._join(rel), target)
            moved += 1
        fs.rm(self.path, recursive=True)
        return moved


def _output_folders(step: Any) -> Iterable[tuple[Any, str]]:
    """(owner, attribute) pairs holding an output DataFolder, including writers nested inside steps."""
    seen: set[int] = set()

    def visit(obj: Any) -> Iterable[tuple[Any, str]]:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(getattr(obj, "output_folder", None), DataFolder):
            yield obj, "output_folder"
        for value in vars(obj).values():
            if isinstance(value, PipelineStep):
                yield from visit(value)

    if isinstance(step, PipelineStep):
        yield from visit(step)


def stage_outputs(pipeline: list, tag: str) -> list[StagedDataFolder]:
    """Point every output folder of `pipeline` (in place) at a staging folder for this attempt."""
    staged: dict[str, StagedDataFolder] = {}
    for step in pipeline:
        for owner, attr in _output_folders(step):
            final = getattr(owner, attr)
            key = final.unstrip_protocol(final.path)
            if key not in staged:
                staged[key] = StagedDataFolder(final, tag)
            setattr(owner, attr, staged[key])
            if isinstance(owner, DiskWriter):
                old = owner.output_mg
                owner.output_mg = staged[key].get_output_file_manager(
                    mode=old.mode, compression=old.compression
                )
    return list(staged.values())


def final_output_folders(pipeline: list) -> list[DataFolder]:
    folders: dict[str, DataFolder] = {}
    for step in pipeline:
        for owner, attr in _output_folders(step):
            folder = getattr(owner, attr)
            folders.setdefault(folder.unstrip_protocol(folder.path), folder)
    return list(folders.values())


def _clear_attempts(final: DataFolder, rank: int | None = None) -> None:
    """Remove staged files of earlier attempts (of one rank, or all of them)."""
    fs, root = final.fs, staging_root(final)
    if not fs.exists(root):
        return
    if rank is None:
        fs.rm(root, recursive=True)
        return
    for path in fs.glob(f"{root}/{rank:05d}-*"):
        fs.rm(path, recursive=True)


_silenced_lock = threading.Lock()
_silenced_ranks = 0
_saved_stderr: Any = None
_devnull: Any = None
_saved_warnings: Any = None


def _log_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any
) -> None:
    from datatrove.utils.logging import logger

    logger.warning(warnings.formatwarning(message, category, filename, lineno).rstrip())


@contextmanager
def _rank_output_to_log() -> Iterator[None]:
    """While any rank runs in this worker process (counted, for threaded workers), sys.stderr goes nowhere and
    Python warnings go to datatrove's logger, whose sinks are then the rank's log file (and the silenced stderr).
    Each first rank in starts with fresh warning registries, so every rank logs its own warnings."""
    global _silenced_ranks, _saved_stderr, _saved_warnings, _devnull
    with _silenced_lock:
        if _silenced_ranks == 0:
            _saved_stderr = sys.stderr
            _devnull = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - closed by the last rank out
            _saved_warnings = warnings.catch_warnings()  # restores showwarning and the filters on exit
            _saved_warnings.__enter__()
            warnings.showwarning = _log_warning
        _silenced_ranks += 1
    try:
        yield
    finally:
        with _silenced_lock:
            _silenced_ranks -= 1
            if _silenced_ranks == 0:
                _saved_warnings.__exit__(None, None, None)
                _devnull.close()  # ours, even if something swapped sys.stderr meanwhile
                sys.stderr = _saved_stderr


class _DropRankReports(logging.Filter):
    """Drops the worker's reports about ranks: "Compute Failed" (task, exception and an escaped traceback,
    dozens of lines; the client reports a failed rank in one line and the traceback is in the rank's log) and
    the cancelled task of a Ctrl-C (the client says "interrupted")."""

    PREFIXES = ("Compute Failed", "Async instruction for")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def _quiet_worker_reports() -> None:
    for name in ("distributed.worker", "distributed.worker.state_machine"):
        worker_logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRankReports) for f in worker_logger.filters):
            worker_logger.addFilter(_DropRankReports())


class DocumentCounter:
    """A pass-through pipeline step that reports, about twice a second, how many documents went by: sent as a
    Dask event on `topic`, so the client's progress bar counts documents as well as finished ranks."""

    REPORT_SECONDS = 0.5

    def __init__(self, topic: str):
        self.topic = topic

    def __repr__(self) -> str:
        return "document counter (progress)"

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        from distributed import get_worker

        try:
            worker = get_worker()
        except ValueError:  # not on a Dask worker: nobody to report to
            yield from data or ()
            return
        pending, last = 0, time.monotonic()
        for document in data or ():
            pending += 1
            if time.monotonic() - last >= self.REPORT_SECONDS:
                worker.log_event(self.topic, pending)
                pending, last = 0, time.monotonic()
            yield document
        if pending:
            worker.log_event(self.topic, pending)


def _with_document_counter(pipeline: list, topic: str) -> list:
    """The pipeline with a DocumentCounter after its leading readers (unchanged if it reads no documents)."""
    readers = 0
    while readers < len(pipeline) and str(getattr(pipeline[readers], "type", "")).endswith("READER"):
        readers += 1
    if readers == 0:
        return pipeline
    return [*pipeline[:readers], DocumentCounter(topic), *pipeline[readers:]]


def _run_rank(executor: DaskPipelineExecutor, rank: int) -> PipelineStats:
    """The Dask task: one rank of one stage."""
    _quiet_worker_reports()
    return executor._run_for_rank(rank)


class DaskPipelineExecutor(PipelineExecutor):
    """Run each rank of a datatrove pipeline as a task on a Dask cluster.

    Args:
        pipeline: datatrove steps and/or callables ``(data, rank, world_size)``.
        tasks: number of ranks.
        logging_dir: logs, stats and completion markers (a path, URL or DataFolder).
        client: a ``distributed.Client`` to use (left open).
        scheduler: address of a running scheduler, e.g. ``tcp://10.0.0.1:8786``, used when no client is given.
        workers: worker processes of the LocalCluster started when neither client nor scheduler is given
            (default: one per core), one thread each.
        depends: another DaskPipelineExecutor that must finish first (run on the same cluster if not yet run).
        skip_completed: skip ranks whose completion marker exists, so a rerun resumes.
        name: shown in the progress bar and in errors.
        progress: show a progress bar of ranks done/total.
        cluster_kwargs: extra arguments for ``distributed.LocalCluster``.
    """

    def __init__(
        self,
        pipeline: list[PipelineStep | Callable],
        tasks: int = 1,
        logging_dir: DataFolderLike = None,
        client: Any = None,
        scheduler: str | None = None,
        workers: int | None = None,
        depends: DaskPipelineExecutor | None = None,
        skip_completed: bool = True,
        randomize_start_duration: int = 0,
        name: str | None = None,
        progress: bool = True,
        cluster_kwargs: dict | None = None,
    ):
        super().__init__(pipeline, logging_dir, skip_completed, randomize_start_duration)
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")
        if depends is not None and not isinstance(depends, DaskPipelineExecutor):
            raise TypeError("depends= must be a DaskPipelineExecutor")
        self.tasks = tasks
        self.client = client
        self.scheduler = scheduler
        self.workers = workers
        self.depends = depends
        self.name = name or "pipeline"
        self.progress = progress
        self.cluster_kwargs = cluster_kwargs or {}
        self._launched = False
        self.progress_topic: str | None = None  # set while a client shows progress

    # -- pickling: the copy sent to workers carries the pipeline, never the client or the dependency chain
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["client"] = None
        state["depends"] = None
        return state

    @property
    def world_size(self) -> int:
        return self.tasks

    def get_distributed_env(self, node_rank: int = -1) -> DistributedEnvVars:
        return DistributedEnvVars(
            datatrove_node_ips="localhost",
            datatrove_cpus_per_task="1",
            datatrove_mem_per_cpu="-1",
            datatrove_gpus_on_node="0",
            datatrove_executor="DASK",
        )

    def log_path(self, rank: int) -> str:
        return self.logging_dir.resolve_paths(f"logs/task_{rank:05d}.log")

    # -- on the worker
    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> PipelineStats:
        if self.is_rank_completed(rank):
            return PipelineStats()
        # a fresh copy per attempt: step objects keep stats and open files
        self.pipeline = deepcopy(self.pipeline)
        if self.progress_topic:
            self.pipeline = _with_document_counter(self.pipeline, self.progress_topic)
        for folder in final_output_folders(self.pipeline):
            _clear_attempts(folder, rank)
        self._staged = stage_outputs(self.pipeline, f"{rank:05d}-{uuid.uuid4().hex[:12]}")
        try:
            # datatrove's task logger writes the rank's log file and copies it to stderr, where every rank of
            # every worker would interleave on the user's terminal; the file alone keeps it, warnings too
            with _rank_output_to_log():
                return super()._run_for_rank(rank, local_rank, node_rank)
        finally:
            for folder in self._staged:  # after a failure (or a commit) nothing of this attempt stays
                if folder.fs.exists(folder.path):
                    folder.fs.rm(folder.path, recursive=True)

    def mark_rank_as_completed(self, rank: int) -> None:
        # datatrove calls this once the rank's pipeline is done and its stats are saved: the moment to commit
        for folder in getattr(self, "_staged", []):
            folder.commit()
        super().mark_rank_as_completed(rank)

    # -- on the client
    def run(self) -> PipelineStats:
        """Run the dependency chain, then every incomplete rank; merge and save stats; raise if a rank failed."""
        with dask_client(self.client, self.scheduler, self.workers, self.cluster_kwargs) as client:
            return self._run_with_client(client)

    def _run_with_client(self, client) -> PipelineStats:
        from distributed import as_completed
        from tqdm.auto import tqdm

        if self.depends is not None:
            if not self.depends._launched:
                self.depends._run_with_client(client)
            incomplete = self.depends.get_incomplete_ranks(skip_completed=True)
            if incomplete:
                raise RuntimeError(
                    f"stage {self.depends.name!r} has incomplete ranks {incomplete[:10]}; cannot start {self.name!r}"
                )
        self._launched = True
        ranks = self.get_incomplete_ranks()
        skipped = self.world_size - len(ranks)
        if ranks:
            self.save_executor_as_json()
        failures: list[tuple[int, str, str]] = []
        if self.progress:
            self.progress_topic = f"longtrove-progress-{self.name}-{uuid.uuid4().hex[:8]}"
        futures = {
            client.submit(
                _run_rank, self, rank, key=f"{self.name}-rank-{rank:05d}-{uuid.uuid4().hex[:8]}", pure=False
            ): rank
            for rank in ranks
        }
        with (
            tqdm(
                total=self.world_size,
                initial=skipped,
                desc=f"{self.name} ranks",
                unit="rank",
                disable=not self.progress,
            ) as bar,
            self._documents_bar(client),
        ):
            for future in as_completed(futures):
                rank = futures[future]
                if future.status == "error":
                    failures.append((rank, _describe(future.exception()), self.log_path(rank)))
                elif future.status != "finished":  # cancelled, or lost with the scheduler
                    failures.append((rank, f"task {future.status}", self.log_path(rank)))
                bar.update()
        if failures:
            raise RankFailedError(self.name, sorted(failures))
        for folder in final_output_folders(self.pipeline):
            _clear_attempts(folder)
        stats = self.merged_stats()
        with self.logging_dir.open("stats.json.tmp", "wt") as f:
            stats.save_to_disk(f)
        self.logging_dir.mv("stats.json.tmp", "stats.json")
        return stats

    @contextmanager
    def _documents_bar(self, client: Any) -> Iterator[None]:
        """A second bar counting documents read, fed by the ranks' DocumentCounter events."""
        from tqdm.auto import tqdm

        topic = self.progress_topic
        if topic is None:
            yield
            return
        with tqdm(desc=f"{self.name} documents", unit="doc", position=1) as documents:
            client.subscribe_topic(topic, lambda event: documents.update(event[1]))
            try:
                yield
            finally:
                client.unsubscribe_topic(topic)
                self.progress_topic = None
            # the last reports may still be on their way: the scheduler's copy of them settles the count
            reported = sum(msg for _, msg in client.get_events(topic))
            if reported > documents.n:
                documents.update(reported - documents.n)

    def merged_stats(self) -> PipelineStats:
        """Sum the saved stats of every rank, including ranks completed by an earlier run."""
        import json

        total = PipelineStats()
        for rank in range(self.world_size):
            path = f"stats/{rank:05d}.json"
            if self.logging_dir.exists(path):
                with self.logging_dir.open(path, "rt") as f:
                    total = total + PipelineStats.from_json(json.load(f))
        return total


def _describe(error: BaseException | None) -> str:
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        return "KilledWorker: the worker running it died on every attempt"
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > _MAX_ERROR_CHARS:
        first = first[: _MAX_ERROR_CHARS - 1] + "…"
    return f"{type(error).__name__}: {first}" + (" (more in the log)" if len(lines) > 1 else "")


@contextmanager
def dask_client(
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    cluster_kwargs: dict | None = None,
) -> Iterator[Any]:
    """The client given; or one connected to `scheduler`; or a new LocalCluster of `workers` single-threaded
    worker processes. Whatever is created here is closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler:
        with Client(scheduler) as new_client:
            yield new_client
        return
    options = {"dashboard_address": ":0", "processes": True, "threads_per_worker": 1}
    options.update(cluster_kwargs or {})
    # ranks are long pure-Python tasks: the workers' sampling profiler would take the GIL from them every 10 ms
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        _workers_ignore_ctrl_c(),
        _DeferredCtrlC() as deferred,  # a cluster interrupted half way up does not close cleanly
        LocalCluster(n_workers=workers or os.cpu_count() or 1, **options) as cluster,
        Client(cluster) as new_client,
    ):
        try:
            deferred.release()
            yield new_client
        except KeyboardInterrupt:
            # the cluster closes under running ranks: its warnings about killed workers are expected noise
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            raise


class _DeferredCtrlC:
    """Within the block, Ctrl-C is noted instead of raised; `release` raises it (once) where it is safe."""

    def __init__(self) -> None:
        self.pressed = False
        self.previous: Any = None

    def _note(self, signum: int, frame: Any) -> None:
        self.pressed = True

    def __enter__(self) -> _DeferredCtrlC:
        import signal

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._note)
        return self

    def release(self) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        if self.pressed:
            self.pressed = False
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes from a fork server that was started with SIGINT ignored, so that every worker
    (restarted ones too) ignores it: Ctrl-C then reaches this process alone, which closes the cluster, instead
    of every worker printing its own traceback. Only the fork server's start, not the cluster's, ignores Ctrl-C
    here (spawned workers would need SIGINT ignored for the whole start-up)."""
    import multiprocessing
    import signal

    import dask

    if (
        threading.current_thread() is not threading.main_thread()
        or "forkserver" not in multiprocessing.get_all_start_methods()
    ):
        yield
        return
    from multiprocessing import forkserver, resource_tracker

    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # sets the modules the fork server imports once for all workers
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the workers' own distributed logs (heartbeats lost while the cluster closes, ...) are not the user's
        # business: a failed rank is reported by the client; set in the server's environment only
        quiet = "DASK_LOGGING__DISTRIBUTED" not in os.environ
        if quiet:
            os.environ["DASK_LOGGING__DISTRIBUTED"] = "critical"
        # after a Ctrl-C, the resource tracker removes the semaphores of killed workers and warns about each
        # (a UserWarning); it takes its warning filters from ours when it starts. The fork server must not:
        # the workers would ignore the warnings of ranks, which belong in the ranks' logs
        try:
            sys.warnoptions.append("ignore::UserWarning")
            try:
                resource_tracker.ensure_running()
            finally:
                sys.warnoptions.remove("ignore::UserWarning")
            forkserver.ensure_running()  # the server keeps the ignored SIGINT it started with for its children
        finally:
            signal.signal(signal.SIGINT, previous)
            if quiet:
                del os.environ["DASK_LOGGING__DISTRIBUTED"]
        yield


def run_stages(
    executors: list[DaskPipelineExecutor],
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
) -> list[PipelineStats]:
    """Run several stages in order on one cluster, each after the one before has completed."""
    with dask_client(client, scheduler, workers) as active:
        return [stage._run_with_client(active) for stage in executors]
