"""results.jsonl: one whole line per answered sample, appended as answers arrive and read back on resume."""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from longctx.suite_reader import SuiteError

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
FINAL_STATUSES = frozenset({"ok", "too_long"})
"""A sample whose latest row has one of these is not sent again by a rerun."""


def read_results(path: Path, *, repair: bool = False) -> dict[str, dict[str, Any]]:
    """The latest result line per sample id.

    A run killed mid-write can leave a partial last line; it is ignored (and, with `repair`, cut off so that the
    next append starts on a fresh line). A malformed line anywhere else is an error naming its line number.
    """
    results: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return results
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        log.warning(
            "%s: ignoring a partial last line (%d bytes) left by an interrupted run",
            path,
            len(data) - good_end,
        )
        if repair:
            with path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
    for lineno, raw in enumerate(data[:good_end].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
            results[str(row["id"])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SuiteError(f"{path}:{lineno}: not a result line ({exc})") from exc
    return results


class ResultWriter:
    """The single writer of results.jsonl: each row is one whole line written with one `write(2)`.

    What `write(2)` returned is the kernel's, so a run killed at any point leaves every line written before it,
    whole. Against a machine crash the file is also fsynced at most every `sync_every` seconds, on a thread of
    its own so the disk never stalls the requests, and again on close.
    """

    def __init__(self, path: Path, sync_every: float = 1.0) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sync_every = sync_every
        self._last_sync = time.monotonic()
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="results-fsync")
        self._syncing: Future[None] | None = None

    def write(self, row: dict[str, Any]) -> None:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        written = os.write(self._fd, line)
        while written < len(line):  # only a full disk or a quota cuts a regular file's write short
            written += os.write(self._fd, line[written:])
        if time.monotonic() - self._last_sync >= self._sync_every:
            self._sync_in_background()

    def _sync_in_background(self) -> None:
        if self._syncing is not None:
            if not self._syncing.done():
                return
            self._syncing.result()  # an fsync error (disk gone) surfaces here
        self._last_sync = time.monotonic()
        self._syncing = self._syncer.submit(os.fsync, self._fd)

    def close(self) -> None:
        self._syncer.shutdown(wait=True)
        try:
            if self._syncing is not None:
                self._syncing.result()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
