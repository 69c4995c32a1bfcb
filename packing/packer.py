"""Best-fit-decreasing packing of token arrays into fixed-length rows, over a bounded pool.

Why a pool and not a global sort: a corpus does not fit in memory, and packing one small batch at a time
(as TRL's `pack_dataset` does over 1000 documents) leaves a partly empty row at the end of every batch,
which at 128K-1M tokens per row is most of the padding. Here the pool is bounded by *tokens* (a 1M-token
row needs millions of pooled tokens to fill well), and the emptiest rows of a round are not written but
carried into the next round, so that nearly all padding sits in the last few rows of the whole run.

A document longer than the row is cut into full rows plus a remainder that is packed like any other
document (no token is dropped), or dropped whole if configured; both are counted. The Python loop runs
once per document, never per token: rows are filled by one numpy concatenation into the writer's buffer.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import numpy as np

LongPolicy = Literal["split", "drop"]

MIN_POOL_TOKENS = 1 << 24  # 16M tokens (64 MB of uint32): plenty of small documents to fill gaps
POOL_ROWS = 32  # and at least this many rows' worth, so long rows still have many candidates
CARRY_FRACTION = 0.25  # at most this share of the pool is carried to the next round
CARRY_MIN_GAP = 0.001  # rows emptier than this share of seq_len are carried when the budget allows


def default_pool_tokens(seq_len: int) -> int:
    """Tokens held before a packing round: 16M or 32 rows, whichever is larger."""
    return max(MIN_POOL_TOKENS, POOL_ROWS * seq_len)


class RowSink(Protocol):
    """Where packed rows go (`packing.format.ShardWriter` is one)."""

    def write_segments(
        self,
        segments: Sequence[np.ndarray],
        *,
        doc_ids: Sequence[str] | None = None,
        doc_offsets: Sequence[int] | None = None,
    ) -> None: ...


@dataclass
class PackStats:
    """What the packer did; every input document is in exactly one of documents/dropped/empty."""

    documents: int = 0  # documents written (whole, or split into several segments)
    tokens: int = 0  # real tokens written
    padding_tokens: int = 0
    rows: int = 0
    split_documents: int = 0  # documents longer than seq_len, cut into full rows plus a remainder
    dropped_documents: int = 0  # documents longer than seq_len, dropped because on_long="drop"
    dropped_tokens: int = 0
    empty_documents: int = 0  # documents with no tokens: skipped, never an empty row
    bad_records: int = 0  # input records skipped as unreadable (counted by the pipeline's readers)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def merge(self, other: PackStats) -> PackStats:
        return PackStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


class Packer:
    """Pack documents (token arrays, separators already added) into rows of `seq_len` tokens.

    Feed documents with `add`/`add_batch`, then call `finish`. Output order depends only on the input
    order and the configuration, so the same input gives the same rows.
    """

    def __init__(
        self,
        sink: RowSink,
        seq_len: int,
        *,
        pool_tokens: int | None = None,
        on_long: LongPolicy = "split",
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if on_long not in ("split", "drop"):
            raise ValueError(f"on_long must be 'split' or 'drop', got {on_long!r}")
        self.sink = sink
        self.seq_len = seq_len
        self.pool_tokens = default_pool_tokens(seq_len) if pool_tokens is None else int(pool_tokens)
        if self.pool_tokens < seq_len:
            raise ValueError(f"pool_tokens ({self.pool_tokens}) must hold at least one row ({seq_len})")
        self.on_long = on_long
        self.stats = PackStats()
        self._arrays: list[np.ndarray] = []
        self._ids: list[str] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._pooled = 0
        self._finished = False

    def add(self, tokens: np.ndarray, doc_id: str = "") -> None:
        """Add one document's tokens (a 1-D array, separators included)."""
        n = int(tokens.shape[0])
        L = self.seq_len
        if n == 0:
            self.stats.empty_documents += 1
            return
        if n > L:
            if self.on_long == "drop":
                self.stats.dropped_documents += 1
                self.stats.dropped_tokens += n
                return
            self.stats.split_documents += 1
            full = n // L
            for i in range(full):  # whole rows, written at once: nothing to pack them with
                self._emit([tokens[i * L : (i + 1) * L]], [doc_id], [i * L])
            self.stats.documents += 1
            rest = n - full * L
            if rest:
                self._pool(tokens[full * L :], doc_id, full * L)
            return
        self.stats.documents += 1
        if n == L:
            self._emit([tokens], [doc_id], [0])
        else:
            self._pool(tokens, doc_id, 0)

    def add_segment(self, tokens: np.ndarray, doc_id: str, offset: int) -> None:
        """Pool a piece of a document already counted elsewhere (a rank's tail), at most one row long."""
        if not 0 < tokens.shape[0] <= self.seq_len:
            raise ValueError(
                f"segment of {doc_id!r} at {offset}: {tokens.shape[0]} tokens, not 1..{self.seq_len}"
            )
        self._pool(tokens, doc_id, offset)

    def add_batch(self, documents: Sequence[np.ndarray], doc_ids: Sequence[str] | None = None) -> None:
        """Add documents in order."""
        if doc_ids is None:
            for tokens in documents:
                self.add(tokens)
        else:
            if len(doc_ids) != len(documents):
                raise ValueError(f"{len(doc_ids)} doc_ids for {len(documents)} documents")
            for tokens, doc_id in zip(documents, doc_ids, strict=True):
                self.add(tokens, doc_id)

    def finish(self) -> PackStats:
        """Pack and write everything still pooled; the last rows are the only ones left part empty."""
        if not self._finished:
            while self._arrays:
                self._round(final=True)
            self._finished = True
        return self.stats

    def finish_with_tail(self, tail_tokens: int) -> list[tuple[np.ndarray, str, int]]:
        """Like `finish`, but hand back (tokens, doc_id, offset) of the emptiest last rows, up to
        `tail_tokens` tokens, instead of writing them: ranks pass their tails to one final packing, so that a
        run on many ranks ends with one part-empty row rather than one per rank. Tail tokens are not in
        `stats` yet."""
        if self._finished:
            return []
        tail: list[tuple[np.ndarray, str, int]] = []
        if self._arrays:
            self._round(final=True, tail_budget=tail_tokens)
            tail = list(zip(self._arrays, self._ids, self._offsets, strict=True))
            self._arrays, self._ids, self._offsets, self._lengths = [], [], [], []
            self._pooled = 0
        self._finished = True
        return tail

    # -- internals ----------------------------------------------------------------------------

    def _pool(self, tokens: np.ndarray, doc_id: str, offset: int) -> None:
        self._arrays.append(tokens)
        self._ids.append(doc_id)
        self._offsets.append(offset)
        self._lengths.append(int(tokens.shape[0]))
        self._pooled += int(tokens.shape[0])
        if self._pooled >= self.pool_tokens:
            self._round(final=False)

    def _emit(self, segments: list[np.ndarray], ids: list[str], offsets: list[int]) -> None:
        self.sink.write_segments(segments, doc_ids=ids, doc_offsets=offsets)
        used = sum(int(s.shape[0]) for s in segments)
        self.stats.rows += 1
        self.stats.tokens += used
        self.stats.padding_tokens += self.seq_len - used

    def _round(self, *, final: bool, tail_budget: int = 0) -> None:
        """One best-fit-decreasing pass over the pool; write the full rows, keep the emptiest ones.

        Kept rows go back to the pool: for the next round, or (final with a tail budget) for the caller."""
        L = self.seq_len
        lengths = np.asarray(self._lengths, dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")  # longest first; ties keep arrival order
        bins: list[list[int]] = []
        free: list[int] = []
        # open bins by remaining room, as (room, bin) so bisect finds the tightest fit that works
        room_index: list[tuple[int, int]] = []
        for item in order.tolist():
            size = self._lengths[item]
            pos = bisect.bisect_left(room_index, (size, -1))
            if pos < len(room_index):
                room, b = room_index.pop(pos)
                bins[b].append(item)
                free[b] = room - size
                if free[b]:
                    bisect.insort(room_index, (free[b], b))
            else:
                bins.append([item])
                free.append(L - size)
                if free[-1]:
                    bisect.insort(room_index, (free[-1], len(bins) - 1))

        carry: set[int] = set()
        if not final or tail_budget > 0:
            budget = tail_budget if final else int(self.pool_tokens * CARRY_FRACTION)
            min_gap = max(1, int(L * CARRY_MIN_GAP))
            # the emptiest rows go back to the pool first, while they fit the budget
            for b in sorted(range(len(bins)), key=lambda b: (-free[b], b)):
                if free[b] < min_gap:
                    break
                used = L - free[b]
                if used > budget:
                    continue
                budget -= used
                carry.add(b)
            if not final and len(carry) == len(bins):  # always make progress
                carry.discard(max(carry, key=lambda b: (L - free[b], -b)))

        arrays, ids, offsets, lens = self._arrays, self._ids, self._offsets, self._lengths
        self._arrays, self._ids, self._offsets, self._lengths = [], [], [], []
        self._pooled = 0
        for b, items in enumerate(bins):
            if b in carry:
                for i in sorted(items):  # back in arrival order, so the next round sees a stable input
                    # a view would pin its whole source batch for as long as it is carried: keep a copy
                    self._arrays.append(arrays[i] if arrays[i].base is None else arrays[i].copy())
                    self._ids.append(ids[i])
                    self._offsets.append(offsets[i])
                    self._lengths.append(lens[i])
                    self._pooled += lens[i]
            else:
                self._emit([arrays[i] for i in items], [ids[i] for i in items], [offsets[i] for i in items])
