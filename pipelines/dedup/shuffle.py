"""Partitioned array files: how one stage's tasks hand rows to the tasks of the next.

A task writes ONE file ``<name>.rows`` holding all its rows ordered by destination partition, and
``<name>.index`` with the ``partitions + 1`` row offsets, so the task of partition p reads only its slice of each
file (a seek and one read, also on object stores). Rows are fixed-width little-endian uint64 records.
"""

from __future__ import annotations

import numpy as np
from datatrove.io import DataFolder

ROWS = ".rows"
INDEX = ".index"


def write_partitioned(folder: DataFolder, name: str, rows: np.ndarray, offsets: np.ndarray) -> None:
    """Write `rows` (already ordered by partition) and their partition offsets as ``name.rows``/``name.index``."""
    rows = np.ascontiguousarray(rows, dtype="<u8")
    with folder.open(f"{name}{ROWS}", "wb") as f:
        f.write(rows.tobytes())
    with folder.open(f"{name}{INDEX}", "wb") as f:
        f.write(np.asarray(offsets, dtype="<u8").tobytes())


def read_partition(folder: DataFolder, partition: int, width: int, suffix: str = ROWS) -> np.ndarray:
    """Partition `partition`'s rows from every ``*.rows`` file of `folder`, as one (n, width) uint64 array."""
    parts = []
    for path in sorted(folder.list_files(glob_pattern=f"*{suffix}")):
        stem = path.removesuffix(suffix)
        with folder.open(f"{stem}{INDEX}", "rb") as f:
            offsets = np.frombuffer(f.read(), dtype="<u8")
        if partition + 1 >= len(offsets):
            raise ValueError(
                f"{folder.path}/{stem}{INDEX} has {len(offsets) - 1} partitions, partition {partition} was asked "
                "for: the number of partitions changed since these files were written; remove the work folder"
            )
        lo, hi = int(offsets[partition]), int(offsets[partition + 1])
        if hi == lo:
            continue
        record = 8 * width
        with folder.open(path, "rb") as f:
            f.seek(lo * record)
            data = f.read((hi - lo) * record)
        if len(data) != (hi - lo) * record:
            raise ValueError(f"{folder.path}/{path}: truncated (expected {(hi - lo) * record} bytes at {lo * record})")
        parts.append(np.frombuffer(data, dtype="<u8").reshape(-1, width))
    if not parts:
        return np.empty((0, width), dtype=np.uint64)
    return np.concatenate(parts).astype(np.uint64, copy=False)


def by_destination(rows: np.ndarray, destination: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by `destination` (an int per row) and the offsets of each destination's slice."""
    order = np.argsort(destination, kind="stable")
    counts = np.bincount(destination, minlength=partitions) if len(destination) else np.zeros(partitions, int)
    return rows[order], np.concatenate([[0], np.cumsum(counts)])
