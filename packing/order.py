"""The order of samples: one permutation per pass of a source, and the periodic mixture schedule.

Why: every rank computes the same global order from ``(seed, epoch)`` alone, so position ``k`` of an
epoch maps to (source, sample) in O(1) without replaying anything, whatever the world size.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from packing.sources import ShardSource


def apportion(weights: np.ndarray, period: int) -> np.ndarray:
    """Largest-remainder apportionment of `period` slots by weight (ties to the lower index)."""
    exact = weights / weights.sum() * period
    quota = np.floor(exact).astype(np.int64)
    rest = period - int(quota.sum())
    if rest:
        order = np.lexsort((np.arange(len(weights)), -(exact - quota)))
        quota[order[:rest]] += 1
    return quota


def spread(quota: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order the slots of one period evenly (Sainte-Laguë): slot j of source i sits at (j + 1/2) / q_i.

    Returns, for each position of the period, the source and that slot's rank among the source's slots.
    """
    src = np.repeat(np.arange(len(quota)), quota)
    rank = np.concatenate([np.arange(q) for q in quota]) if len(quota) else np.zeros(0, np.int64)
    when = (2 * rank + 1) / (2 * quota[src]).astype(np.float64)
    order = np.lexsort((src, when))
    return src[order].astype(np.int64), rank[order].astype(np.int64)


class BlockOrder:
    """A block shuffle computed on demand: shards in a seeded order, then samples shuffled per block.

    The shards' rows are laid out in the shuffled shard order; position p belongs to block p // block,
    whose permutation is seeded by (seed, source, pass, block). Memory is one entry a shard plus the few
    blocks in use, whatever the number of samples.
    """

    def __init__(self, cum_rows: np.ndarray, block: int, key: tuple[int, int, int]) -> None:
        self.block = block
        self.key = key
        self.n = int(cum_rows[-1])
        rows = np.diff(cum_rows)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*key, 2**32])))
        shard_order = rng.permutation(len(rows))
        self.starts = cum_rows[:-1][shard_order]  # first sample of each laid-out shard
        self.laid = np.zeros(len(rows) + 1, dtype=np.int64)  # where each laid-out shard begins
        np.cumsum(rows[shard_order], out=self.laid[1:])
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    def _perm(self, b: int) -> np.ndarray:
        perm = self._blocks.get(b)
        if perm is None:
            size = min(self.block, self.n - b * self.block)
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*self.key, b])))
            perm = rng.permutation(size)
            self._blocks[b] = perm
            if len(self._blocks) > 4:
                self._blocks.popitem(last=False)
        return perm

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        blocks = positions // self.block
        laid = np.empty(len(positions), dtype=np.int64)
        for b in np.unique(blocks).tolist():
            sel = blocks == b
            laid[sel] = b * self.block + self._perm(b)[positions[sel] - b * self.block]
        shard = np.searchsorted(self.laid, laid, side="right") - 1
        return self.starts[shard] + (laid - self.laid[shard])


class MixtureOrder:
    """Global mixture positions -> (source, sample): a periodic schedule over per-pass permutations.

    Mixtures interleave sources with a fixed schedule (apportioned by the weights, then spread evenly
    inside the period); each source runs through its own passes, each a fresh permutation seeded by
    (seed, source, pass).
    """

    def __init__(
        self,
        sources: list[ShardSource],
        *,
        seed: int,
        shuffle: bool,
        shuffle_block: int | None,
        mixture_period: int,
    ) -> None:
        self.sources = sources
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_block = shuffle_block
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        period = 1 if len(sources) == 1 else mixture_period
        self.quota = apportion(weights, period)
        for s, q in zip(sources, self.quota, strict=True):
            if q == 0:
                raise ValueError(
                    f"{s.location}: weight {s.weight} gets no slot in a mixture period of {period}; "
                    f"raise mixture_period"
                )
        self.period = period
        self.slot_source, self.slot_rank = spread(self.quota)
        self._orders: dict[tuple[int, int], np.ndarray | BlockOrder] = {}

    def first_full_pass(self) -> int:
        """Mixture positions until some source has given every one of its samples once."""
        best = None
        for i, s in enumerate(self.sources):
            if s.samples == 0:
                return 0
            block, r = divmod(s.samples - 1, int(self.quota[i]))
            slot = int(np.flatnonzero((self.slot_source == i) & (self.slot_rank == r))[0])
            end = block * self.period + slot + 1
            best = end if best is None else min(best, end)
        return int(best or 0)

    def order(self, source: int, pass_: int) -> np.ndarray | BlockOrder:
        """Sample indices of one pass over one source: a permutation seeded by (seed, source, pass).

        Indexed with an array of positions. The global shuffle holds the whole permutation (4 bytes a
        sample); the block shuffle computes blocks on demand, so its memory does not grow with the data.
        """
        key = (source, pass_)
        order = self._orders.get(key)
        if order is not None:
            return order
        src = self.sources[source]
        n = src.samples
        dtype = np.uint32 if n < 2**32 else np.int64
        if not self.shuffle:
            order = np.arange(n, dtype=dtype)
        elif self.shuffle_block is None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, source, pass_])))
            order = np.arange(n, dtype=dtype)
            rng.shuffle(order)
        else:
            order = BlockOrder(src.cum_rows, self.shuffle_block, (self.seed, source, pass_))
        # keep the two most recent passes: a chunk may straddle a pass boundary
        if len(self._orders) >= 2 * len(self.sources):
            self._orders.pop(next(iter(self._orders)))
        self._orders[key] = order
        return order

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global mixture positions -> (source index, sample index inside the source)."""
        block, slot = np.divmod(positions, self.period)
        src = self.slot_source[slot]
        nth = block * self.quota[src] + self.slot_rank[slot]
        sample = np.empty(len(positions), dtype=np.int64)
        for s in np.unique(src):
            mask = src == s
            n = self.sources[s].samples
            pass_, pos = np.divmod(nth[mask], n)
            out = np.empty(len(pos), dtype=np.int64)
            for p in np.unique(pass_):
                sel = pass_ == p
                out[sel] = self.order(int(s), int(p))[pos[sel]]
            sample[mask] = out
        return src, sample

    def shards_of(self, src: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard index and row inside it for each (source, sample)."""
        shard = np.empty(len(sample), dtype=np.int64)
        row = np.empty(len(sample), dtype=np.int64)
        for s in np.unique(src).tolist():
            mask = src == s
            cum = self.sources[s].cum_rows
            found = np.searchsorted(cum, sample[mask], side="right") - 1
            shard[mask] = found
            row[mask] = sample[mask] - cum[found]
        return shard, row

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_orders"] = {}
        return state


__all__ = ["BlockOrder", "MixtureOrder", "apportion", "spread"]
