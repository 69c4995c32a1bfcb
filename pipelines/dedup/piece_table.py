"""The whitespace pieces a worker has met and, for those spaCy splits, their words, looked up by compiled code.

Looking each piece of a batch up in a Python dict means a bytes object per word and a hash of it: more time
than hashing all n-grams. Here the pieces of a whole batch are found in one compiled pass over the text buffer
(``kernels.split_pieces`` and ``find_pieces``): an open-addressing table keyed by each piece's XXH64, every hit
confirmed byte for byte against the stored piece, so a hash collision can cost a probe but never a wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.dedup.kernels import find_pieces, insert_pieces, replace_pieces, split_pieces, xxh64_ranges


@dataclass
class TextBatch:
    """Texts in one byte buffer: text i is ``buffer[starts[i]:ends[i]]``."""

    buffer: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, texts: list[bytes]) -> TextBatch:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        ends = np.cumsum(lengths + 1) - 1  # one separator after each text
        # writable, as the compiled kernels' own outputs are: one compiled version of each kernel serves both
        return cls(np.frombuffer(bytearray(b" ".join(texts)), dtype=np.uint8), ends - lengths, ends)

    def texts(self) -> list[bytes]:
        data = self.buffer.tobytes()
        return [data[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)]


@dataclass
class BatchPieces:
    """The pieces of a TextBatch: start, length, XXH64 and table id of each; ``offsets`` per text."""

    at: np.ndarray
    lengths: np.ndarray
    hashes: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray


def _grown(array: np.ndarray, needed: int, fill: int | None = None) -> np.ndarray:
    if needed <= len(array):
        return array
    bigger = np.empty(max(needed, 2 * len(array)), dtype=array.dtype)
    if fill is not None:
        bigger.fill(fill)
    bigger[: len(array)] = array
    return bigger


class PieceTable:
    """Pieces (bytes without whitespace) and the words each one stands for; ids in order of addition."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.count = 0
        self.splits = 0
        self.slots = np.full(1 << 12, -1, dtype=np.int64)
        self.piece_hash = np.empty(1 << 10, dtype=np.uint64)
        self.piece_start = np.empty(1 << 10, dtype=np.int64)
        self.piece_len = np.empty(1 << 10, dtype=np.int64)
        self.words_start = np.empty(1 << 10, dtype=np.int64)  # -1: the piece is one word
        self.words_len = np.empty(1 << 10, dtype=np.int64)
        self.pool = np.empty(1 << 16, dtype=np.uint8)
        self.pool_used = 0

    def pieces(self, batch: TextBatch) -> BatchPieces:
        at, lengths, hashes, offsets = split_pieces(batch.buffer, batch.starts, batch.ends)
        return BatchPieces(at, lengths, hashes, self.find(batch.buffer, at, lengths, hashes), offsets)

    def find(self, buffer: np.ndarray, at: np.ndarray, lengths: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        n = self.count
        return find_pieces(
            buffer, at, lengths, hashes, self.slots, self.piece_hash[:n], self.piece_start[:n], self.piece_len[:n],
            self.pool,
        )

    def add(self, pieces: list[bytes], words: list[bytes | None]) -> None:
        """New pieces (distinct, none in the table) and their words joined by spaces (None: one word)."""
        first, n = self.count, len(pieces)
        for name in ("piece_hash", "piece_start", "piece_len", "words_start", "words_len"):
            setattr(self, name, _grown(getattr(self, name), first + n))
        data = b"".join(pieces) + b"".join(w for w in words if w is not None)
        self.pool = _grown(self.pool, self.pool_used + len(data))
        self.pool[self.pool_used : self.pool_used + len(data)] = np.frombuffer(data, dtype=np.uint8)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=n)
        starts = self.pool_used + np.cumsum(lengths) - lengths
        ids = slice(first, first + n)
        self.piece_start[ids], self.piece_len[ids] = starts, lengths
        self.piece_hash[ids] = xxh64_ranges(self.pool, starts, starts + lengths, np.uint64(0))
        split = np.array([w is not None for w in words], dtype=bool)
        word_lengths = np.fromiter((len(w) for w in words if w is not None), dtype=np.int64)
        self.words_start[ids] = -1
        self.words_start[first + np.flatnonzero(split)] = (
            self.pool_used + int(lengths.sum()) + np.cumsum(word_lengths) - word_lengths
        )
        self.words_len[first + np.flatnonzero(split)] = word_lengths
        self.pool_used += len(data)
        self.count += n
        self.splits += int(split.sum())
        if 2 * self.count > len(self.slots):  # keep the table at most half full: short probes
            size = len(self.slots)
            while 2 * self.count > size:
                size *= 2
            self.slots = np.full(size, -1, dtype=np.int64)
            insert_pieces(self.slots, self.piece_hash, 0, self.count)
        else:
            insert_pieces(self.slots, self.piece_hash, first, n)

    def replaced(self, batch: TextBatch, pieces: BatchPieces) -> TextBatch:
        """The batch with every piece that splits replaced by its words (the batch itself where none does)."""
        if not self.splits or (self.words_start[pieces.ids] < 0).all():
            return batch
        n = self.count
        return TextBatch(
            *replace_pieces(
                batch.buffer, pieces.at, pieces.lengths, pieces.ids, pieces.offsets, self.words_start[:n],
                self.words_len[:n], self.pool,
            )
        )
