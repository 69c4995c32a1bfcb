"""Exact dedup's find stage, one task per hash range, vectorized.

datatrove's ``ExactDedupSignature(finder_workers=P)`` already writes each rank's hashes split into P hash ranges
(folders ``0000`` ... ``P-1``); every copy of a text has the same hash, so each range can be searched on its own.
``ExactFindPartition`` does for one range what datatrove's ``ExactFindDedups`` does with a heap, as one sort:
within a group of equal hashes the first document (highest priority, then lowest index, then lowest rank) is kept
and every other is written to ``<range>/<rank>.c4_dup``, the file datatrove's ``ExactDedupFilter`` reads.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import get_sig_dtype
from datatrove.utils.hashing import HashConfig
from datatrove.utils.typeshelper import ExtensionHelperSD


def exact_duplicates(
    hashes: np.ndarray, priorities: np.ndarray, docs: np.ndarray, files: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In the order (hash, -priority, doc, file): the rows that repeat an earlier row's hash, and the kept first
    row of each repeated hash with its number of copies removed."""
    order = np.lexsort((files, docs, -priorities.astype(np.int64), hashes))
    sorted_hashes = hashes[order]
    repeat = np.concatenate([[False], sorted_hashes[1:] == sorted_hashes[:-1]])
    firsts = np.flatnonzero(~repeat)
    copies = np.diff(np.append(firsts, len(order))) - 1
    return order[repeat], order[firsts[copies > 0]], copies[copies > 0]


class ExactFindPartition(PipelineStep):
    """Find the exact duplicates of one hash range (this task's rank) across every rank's signatures."""

    type = "🫂 - DEDUPS"
    name = "💥 exact find (hash range)"

    def __init__(self, data_folder: DataFolderLike, output_folder: DataFolderLike, hash_config: HashConfig):
        super().__init__()
        self.data_folder = get_datafolder(data_folder)
        self.output_folder = get_datafolder(output_folder)
        self.hash_config = hash_config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        suffix = ExtensionHelperSD.stage_1_signature
        dtype = get_sig_dtype(self.hash_config)
        with self.track_time():
            files = sorted(self.data_folder.list_files(subdirectory=f"{rank:04d}", glob_pattern=f"*{suffix}"))
            stems, parts = [], []
            for path in files:
                with self.data_folder.open(path, "rb") as f:
                    parts.append(np.frombuffer(f.read(), dtype=dtype))
                stems.append(path.rpartition("/")[2].removesuffix(suffix))
            sigs = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
            file_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
            dups, kept, copies = exact_duplicates(sigs["hash"], sigs["priority"], sigs["doc"], file_of)
            self.stat_update("signatures", value=len(sigs))
            self.stat_update("duplicates", value=len(dups))
            for i in np.unique(file_of[dups]).tolist():
                with self.output_folder.open(f"{rank:05d}/{stems[i]}{ExtensionHelperSD.stage_2_duplicates}", "wb") as f:
                    f.write(np.sort(sigs["doc"][dups[file_of[dups] == i]]).astype("<u4").tobytes())
            counts = np.empty(len(kept), dtype=[("doc", "<u4"), ("count", "<u4")])
            counts["doc"], counts["count"] = sigs["doc"][kept], copies
            for i in np.unique(file_of[kept]).tolist():  # datatrove's filter sets metadata duplicate_count from these
                mine = np.sort(counts[file_of[kept] == i], order="doc")
                with self.output_folder.open(f"{rank:05d}/{stems[i]}{ExtensionHelperSD.stage_2_counts}", "wb") as f:
                    f.write(mine.tobytes())
        return
        yield
