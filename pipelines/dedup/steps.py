"""The datatrove steps of the partitioned dedup stages; the array work lives in the modules they call.

Every step writes through ``self.output_folder`` so that the Dask executor stages its files per attempt and
commits them only when the whole rank has succeeded.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

from pipelines.dedup import components
from pipelines.dedup.minhash import band_edges, band_keys, node_ids, partition_of, permutations, signatures
from pipelines.dedup.shingles import Shingler
from pipelines.dedup.shuffle import by_destination, read_partition, write_partitioned

LARGE, SMALL = "large", "small"


class MinhashBandSignature(PipelineStep):
    """Stage 1: MinHash signatures of a rank's documents (datatrove's, bit for bit), as band keys sent to the
    partitions that match them. Documents are processed in batches: normalize, split, hash n-grams, min-hash."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash band keys"

    def __init__(
        self,
        output_folder: DataFolderLike,
        partitions: int,
        n_grams: int = 5,
        num_buckets: int = 14,
        hashes_per_bucket: int = 8,
        seed: int = 1,
        batch_size: int = 1024,
        batch_chars: int = 16_000_000,
    ):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.partitions = partitions
        self.n_grams, self.num_buckets, self.seed = n_grams, num_buckets, seed
        self.num_hashes = num_buckets * hashes_per_bucket
        self.batch_size, self.batch_chars = batch_size, batch_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        shingler = Shingler(self.n_grams)
        a, b = permutations(self.num_hashes, self.seed)
        keys: list[np.ndarray] = []
        batch: list[str] = []
        first = chars = 0

        def flush() -> None:
            with self.track_time(unit="batch"):
                shingles = shingler.shingles(batch)
                sigs = signatures(shingles.hashes, shingles.offsets, a, b)
                has_shingles = np.flatnonzero(np.diff(shingles.offsets))
                self.stat_update("no_shingles", value=len(batch) - len(has_shingles))
                k1, k2 = band_keys(sigs, self.num_buckets)
                nodes = np.repeat(node_ids(rank, first + has_shingles), self.num_buckets)
                keys.append(np.stack([k1.reshape(-1), k2.reshape(-1), nodes], axis=1))

        for doc in data:
            self.stat_update(StatHints.total)
            batch.append(doc.text)
            chars += len(doc.text)
            if len(batch) == self.batch_size or chars >= self.batch_chars:
                flush()
                first += len(batch)
                batch, chars = [], 0
        if batch:
            flush()
        rows = np.concatenate(keys) if keys else np.empty((0, 3), np.uint64)
        rows, offsets = by_destination(rows, (rows[:, 0] % np.uint64(self.partitions)).astype(np.int64), self.partitions)
        write_partitioned(self.output_folder, f"{rank:05d}", rows, offsets)


class MinhashBandMatch(PipelineStep):
    """Stage 2, one task per partition of band keys: documents sharing a key become edges, stored at both ends
    for the first large-star pass."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash band match"

    def __init__(self, input_folder: DataFolderLike, output_folder: DataFolderLike):
        super().__init__()
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            rows = read_partition(self.input_folder, rank, width=3)
            edges = band_edges(rows[:, 0], rows[:, 1], rows[:, 2])
            self.stat_update("band_keys", value=len(rows))
            self.stat_update("edges", value=len(edges))
            _send(self.output_folder, rank, components.both_directions(edges), world_size)
        return
        yield


class StarPass(PipelineStep):
    """One large-star or small-star pass over the edges of one partition of nodes (a stage per pass)."""

    type = "🫂 - DEDUP"

    def __init__(self, kind: str, input_folder: DataFolderLike, output_folder: DataFolderLike):
        super().__init__()
        if kind not in (LARGE, SMALL):
            raise ValueError(f"kind must be {LARGE!r} or {SMALL!r}, got {kind!r}")
        self.kind = kind
        self.name = f"🎯 {kind}-star"
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            pairs = read_partition(self.input_folder, rank, width=2)
            if self.kind == LARGE:
                out, changes = components.large_star(pairs)
                out = components.at_larger_end(out)  # the next pass is small-star
            else:
                out, changes = components.small_star(pairs)
                out = components.both_directions(out)
            self.stat_update("edges", value=len(pairs))
            self.stat_update("changes", value=changes)
            _send(self.output_folder, rank, out, world_size)
        return
        yield


def _send(folder, rank: int, pairs: np.ndarray, partitions: int) -> None:
    rows, offsets = by_destination(pairs, partition_of(pairs[:, 0], partitions), partitions)
    write_partitioned(folder, f"{rank:05d}", rows, offsets)


class MinhashRemovals(PipelineStep):
    """After the last round, one task per partition of nodes: the removed documents, sent to their ranks."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash removals"

    def __init__(self, input_folder: DataFolderLike, output_folder: DataFolderLike, ranks: int):
        super().__init__()
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)
        self.ranks = ranks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            removed = components.removed_nodes(read_partition(self.input_folder, rank, width=2))
            self.stat_update("to_remove", value=len(removed))
            owner = (removed >> np.uint64(32)).astype(np.int64)
            if len(owner) and owner.max() >= self.ranks:
                raise ValueError(f"a removed document belongs to rank {owner.max()}, but there are {self.ranks} ranks")
            rows, offsets = by_destination(removed.reshape(-1, 1), owner, self.ranks)
            write_partitioned(self.output_folder, f"{rank:05d}", rows, offsets)
        return
        yield


class RemovalFilter(PipelineStep):
    """Drop the documents of this rank listed by the removals stage (by their index within the rank)."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash filter"

    def __init__(self, input_folder: DataFolderLike):
        super().__init__()
        self.input_folder = get_datafolder(input_folder)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        removed = read_partition(self.input_folder, rank, width=1)[:, 0] & np.uint64(0xFFFFFFFF)
        removed = set(removed.tolist())
        for index, doc in enumerate(data):
            self.stat_update(StatHints.total)
            if index in removed:
                self.stat_update(StatHints.dropped)
                continue
            self.stat_update(StatHints.forwarded)
            yield doc
