"""One shard, memory-mapped: numpy views of every record batch, and a budget for mapped pages.

Why: a trainer reads a few rows of many shards; mapping a shard costs nothing until a page is touched,
and a sample is a view of the mapped file (no copy, no per-token Python).
"""

from __future__ import annotations

import bisect
import mmap
import os

import numpy as np
import pyarrow as pa

from packing.format import ShardFormatError

FOLIO_BYTES = 2 * 1024**2  # the most a page fault on a mapped file may map at once (a PMD-size folio)


class MappedShard:
    """A memory-mapped shard with numpy views of every record batch (nothing is copied)."""

    def __init__(self, path: str, *, seq_len: int, dtype: str, rows: int, where: str) -> None:
        self.path = path
        self.seq_len = seq_len
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise ShardFormatError(f"{path}: listed in {where} but missing") from e
        try:
            size = os.fstat(fd).st_size
            self.nbytes = size
            if size == 0:
                raise ShardFormatError(f"{path}: empty file (truncated shard)")
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            reader = pa.ipc.open_file(pa.py_buffer(self._map))
            value_type = pa.uint32() if dtype == "uint32" else pa.uint16()
            expected = pa.list_(value_type, seq_len)
            schema = reader.schema
            if schema.get_field_index("input_ids") < 0 or schema.field("input_ids").type != expected:
                raise ShardFormatError(
                    f"{path}: column input_ids is not {expected} as {where} says (seq_len {seq_len}, {dtype})"
                )
            if schema.get_field_index("doc_lengths") < 0 or schema.field("doc_lengths").type != pa.list_(
                pa.int32()
            ):
                raise ShardFormatError(f"{path}: column doc_lengths missing or not list<int32>")
            self.ids: list[np.ndarray] = []
            self.addresses: list[int] = []  # where each batch's ids sit in memory
            self.row_bytes = seq_len * (4 if dtype == "uint32" else 2)
            self.len_offsets: list[list[int]] = []  # small; plain ints index fastest
            self.len_values: list[np.ndarray] = []
            starts = [0]
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                ids_col = batch.column("input_ids")
                lengths_col = batch.column("doc_lengths")
                if ids_col.null_count or lengths_col.null_count:
                    raise ShardFormatError(f"{path}: record batch {b} holds nulls")
                flat = ids_col.flatten().to_numpy(zero_copy_only=True)
                self.ids.append(flat.reshape(batch.num_rows, seq_len))
                self.addresses.append(flat.ctypes.data)
                self.len_offsets.append(lengths_col.offsets.to_numpy(zero_copy_only=True).tolist())
                self.len_values.append(lengths_col.values.to_numpy(zero_copy_only=True))
                starts.append(starts[-1] + batch.num_rows)
        except pa.ArrowException as e:
            raise ShardFormatError(
                f"{path}: not a readable Arrow IPC file, truncated or corrupted ({e})"
            ) from e
        if starts[-1] != rows:
            raise ShardFormatError(f"{path}: holds {starts[-1]} rows but {where} lists {rows}")
        self.batch_starts = starts

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(input_ids view, doc_lengths view, memory address of the ids)."""
        starts = self.batch_starts
        b = 0 if len(starts) == 2 else bisect.bisect_right(starts, r) - 1
        i = r - starts[b]
        offsets = self.len_offsets[b]
        return (
            self.ids[b][i],
            self.len_values[b][offsets[i] : offsets[i + 1]],
            self.addresses[b] + i * self.row_bytes,
        )

    def release_pages(self) -> None:
        """Drop this process's mapped pages; views stay valid and fault back in from the page cache."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


class MappedPages:
    """The folios reads have mapped since the last release (a fault maps the whole folio around it)."""

    def __init__(self) -> None:
        self.folios: set[int] = set()

    def note(self, address: int, nbytes: int) -> None:
        first, last = address // FOLIO_BYTES, (address + nbytes - 1) // FOLIO_BYTES
        if first == last:
            self.folios.add(first)
        else:
            self.folios.update(range(first, last + 1))

    @property
    def nbytes(self) -> int:
        return len(self.folios) * FOLIO_BYTES

    def clear(self) -> None:
        self.folios.clear()


__all__ = ["FOLIO_BYTES", "MappedPages", "MappedShard"]
