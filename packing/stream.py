"""Shards to a deterministic, resumable stream of samples for every trainer rank.

Why it is built this way:

- **One global order per epoch.** Every rank computes the same order of all samples from ``(seed, epoch)``
  (a PCG64 permutation). Position ``k`` of that order, counted from where the job last resumed, goes to
  rank ``k % world_size``; inside a rank, DataLoader workers take whole batches round-robin. So every
  sample of an epoch is read exactly once across all ranks and workers, and ranks differ by at most one.
- **Progress is global.** The state is "``consumed`` samples of epoch ``e`` taken by the whole job". All ranks
  advance in lock-step (``world_size`` samples per step), so every rank holds the same state after the
  same number of steps, any rank's state resumes the job, and a new ``world_size`` simply deals the rest
  of the epoch round-robin from that offset: nothing repeated, nothing skipped.
- **Zero-copy reads.** Shards are memory-mapped; a sample is a numpy view of its record batch, located
  by ``searchsorted`` over cumulative row counts. There is no per-token Python.
- **Mixtures** interleave shard folders with a fixed periodic schedule (apportioned by the weights, then
  spread evenly inside the period), so position ``k`` maps to (source, n-th sample of that source) in O(1)
  and a resume needs no replay. Each source runs through its own passes, each a fresh permutation.
"""

from __future__ import annotations

import bisect
import math
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from packing.format import INDEX_FILE, ShardFormatError, file_sha256, read_index

STATE_FORMAT = "longtrove.stream"
STATE_VERSION = 1
DEFAULT_MIXTURE_PERIOD = 10_000
_CHUNK = 256  # samples resolved per vectorized step
_FOLIO_BYTES = 2 * 1024**2  # the most a page fault on a mapped file may map at once (a PMD-size folio)


Sample = dict[str, np.ndarray]


# -- helpers on document lengths ----------------------------------------------------------------


def _segments(doc_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-empty segment lengths of a row; the padding tail, if any, is one more segment."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    used = int(lengths.sum())
    if used > seq_len or (lengths < 0).any():
        raise ValueError(f"doc_lengths {lengths.tolist()[:8]}... do not fit a row of {seq_len} tokens")
    if used < seq_len:
        lengths = np.append(lengths, seq_len - used)
    return lengths[lengths > 0]


def cu_seqlens_from_lengths(doc_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """int32 cumulative segment boundaries ``[0, l0, l0+l1, ..., seq_len]`` for variable-length attention.

    The padding tail counts as its own segment so that the last boundary is always ``seq_len``, the
    convention of flash-attention's ``*_varlen`` kernels.
    """
    lengths = _segments(doc_lengths, seq_len)
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return cu


def position_ids_from_lengths(doc_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """int32 positions restarting at 0 at every document (and at the padding tail)."""
    lengths = _segments(doc_lengths, seq_len)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return (np.arange(seq_len, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)


# -- one shard, memory-mapped -------------------------------------------------------------------


class _OpenShard:
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


# -- one shard folder ---------------------------------------------------------------------------


@dataclass
class _Source:
    location: str  # local folder, or fsspec URL
    weight: float
    index: dict[str, Any]
    remote: bool
    cum_rows: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rows = np.fromiter((s["rows"] for s in self.index["shards"]), dtype=np.int64)
        self.cum_rows = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(rows, out=self.cum_rows[1:])

    @property
    def samples(self) -> int:
        return int(self.cum_rows[-1])

    @property
    def seq_len(self) -> int:
        return int(self.index["seq_len"])

    @property
    def fingerprint(self) -> str:
        return str(self.index["tokenizer"].get("fingerprint"))

    @property
    def index_name(self) -> str:
        return f"{self.location.rstrip('/')}/{INDEX_FILE}"

    def describe(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "weight": self.weight,
            "samples": self.samples,
            "seq_len": self.seq_len,
            "fingerprint": self.fingerprint,
        }


def _is_url(location: str) -> bool:
    return "://" in location


def _parse_source(source: Any) -> list[tuple[str, float]]:
    if isinstance(source, str | os.PathLike):
        return [(os.fspath(source), 1.0)]
    if isinstance(source, Sequence) and source:
        pairs = []
        for i, item in enumerate(source):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise ValueError(f"mixture entry {i} must be a (folder, weight) pair, got {item!r}")
            folder, weight = item
            weight = float(weight)
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"mixture entry {i} ({folder}): weight must be positive, got {weight}")
            pairs.append((os.fspath(folder), weight))
        return pairs
    raise ValueError(f"source must be a shard folder or a list of (folder, weight) pairs, got {source!r}")


# -- the mixture schedule -----------------------------------------------------------------------


def _apportion(weights: np.ndarray, period: int) -> np.ndarray:
    """Largest-remainder apportionment of `period` slots by weight (ties to the lower index)."""
    exact = weights / weights.sum() * period
    quota = np.floor(exact).astype(np.int64)
    rest = period - int(quota.sum())
    if rest:
        order = np.lexsort((np.arange(len(weights)), -(exact - quota)))
        quota[order[:rest]] += 1
    return quota


def _spread(quota: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order the slots of one period evenly (Sainte-Laguë): slot j of source i sits at (j + 1/2) / q_i.

    Returns, for each position of the period, the source and that slot's rank among the source's slots.
    """
    src = np.repeat(np.arange(len(quota)), quota)
    rank = np.concatenate([np.arange(q) for q in quota]) if len(quota) else np.zeros(0, np.int64)
    when = (2 * rank + 1) / (2 * quota[src]).astype(np.float64)
    order = np.lexsort((src, when))
    return src[order].astype(np.int64), rank[order].astype(np.int64)


class _BlockOrder:
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


# -- the stream ---------------------------------------------------------------------------------


class ShardStream:
    """Iterate packed samples of one trainer rank, in a deterministic global order, resumably.

    Args:
        source: a shard folder (local path or fsspec URL), or a list of ``(folder, weight)`` pairs.
        rank, world_size: this data-parallel rank and the number of ranks.
        seed: seeds every permutation (with the epoch and, for mixtures, the source index).
        shuffle: ``False`` reads samples in index order (still dealt round-robin to ranks).
        shuffle_block: ``None`` shuffles all samples of a source globally. An int shuffles the shard order
            and then samples inside consecutive blocks of that many samples, so a rank touches only the
            shards of the current block (what a bounded remote cache needs).
        drop_last: give every rank exactly ``remaining // world_size`` samples in an epoch (the leftover,
            fewer than ``world_size`` samples, are skipped that epoch) instead of letting ranks differ by one.
        position_ids, cu_seqlens: also yield these int32 arrays per sample.
        with_index: also yield ``source_id`` and ``sample_id`` (int64 scalars) for provenance.
        verify_checksums: compare each shard's sha256 to the index on first open in this process
            (remote shards: on download).
        samples_per_epoch: mixture epoch length; default: until the first source completes a full pass.
        mixture_period: slots of the periodic mixture schedule; realized shares are exact per period.
        cache_dir, cache_bytes, prefetch, storage_options: remote folders only (see ``packing.cache``).
        max_open_shards: memory maps kept open at once (least recently used are dropped).
        release_bytes: drop this process's mapped pages after reading about that many bytes, so
            resident memory stays bounded over an epoch (the pages stay in the OS page cache, and views
            already handed out stay valid). ``None`` keeps them mapped until the shard is closed.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[tuple[str | os.PathLike[str], float]],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        *,
        shuffle_block: int | None = None,
        drop_last: bool = False,
        position_ids: bool = False,
        cu_seqlens: bool = False,
        with_index: bool = False,
        verify_checksums: bool = True,
        samples_per_epoch: int | None = None,
        mixture_period: int = DEFAULT_MIXTURE_PERIOD,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = 16 * 1024**3,
        prefetch: int = 2,
        storage_options: dict[str, Any] | None = None,
        max_open_shards: int = 64,
        release_bytes: int | None = 256 * 1024**2,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if shuffle_block is not None and shuffle_block < 1:
            raise ValueError(f"shuffle_block must be >= 1 or None, got {shuffle_block}")
        if mixture_period < 1:
            raise ValueError(f"mixture_period must be >= 1, got {mixture_period}")
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_block = shuffle_block
        self.drop_last = drop_last
        self.want_position_ids = position_ids
        self.want_cu_seqlens = cu_seqlens
        self.with_index = with_index
        self.verify_checksums = verify_checksums
        self.max_open_shards = max(1, max_open_shards)
        self.release_bytes = release_bytes
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.cache_bytes = cache_bytes
        self.prefetch = prefetch
        self.storage_options = dict(storage_options or {})

        self.sources = [self._load_source(loc, w) for loc, w in _parse_source(source)]
        self._check_mixture()
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        period = 1 if len(self.sources) == 1 else mixture_period
        self._quota = _apportion(weights, period)
        for s, q in zip(self.sources, self._quota, strict=True):
            if q == 0:
                raise ValueError(
                    f"{s.location}: weight {s.weight} gets no slot in a mixture period of {period}; "
                    f"raise mixture_period"
                )
        self._period = period
        self._slot_source, self._slot_rank = _spread(self._quota)
        self.samples_per_epoch = (
            int(samples_per_epoch) if samples_per_epoch is not None else self._first_full_pass()
        )
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if self.samples_per_epoch < 1:
            raise ShardFormatError(f"{self.sources[0].index_name}: holds no samples (no rows in any shard)")

        self._epoch = 0
        self._start = 0  # global offset in the epoch where the current pass of this rank began
        self._taken = 0  # samples this rank has taken since _start
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._open: OrderedDict[tuple[int, int], _OpenShard] = OrderedDict()
        self._verified: set[tuple[int, int]] = set()
        self._caches: dict[int, Any] = {}
        self._pid = os.getpid()
        self._mapped: set[int] = set()  # 2 MiB regions read since pages were last released
        self._last_key: tuple[int, int] | None = None

    # -- loading --------------------------------------------------------------------------------

    def _load_source(self, location: str, weight: float) -> _Source:
        if _is_url(location):
            from packing.cache import ShardCache

            cache = ShardCache(
                location,
                cache_dir=self.cache_dir,
                max_bytes=self.cache_bytes,
                prefetch=self.prefetch,
                storage_options=self.storage_options,
                verify=self.verify_checksums,
            )
            index = cache.read_index()
            return _Source(location, weight, index, remote=True)
        return _Source(location, weight, read_index(location), remote=False)

    def _check_mixture(self) -> None:
        first = self.sources[0]
        for s in self.sources[1:]:
            if s.fingerprint != first.fingerprint:
                raise ShardFormatError(
                    f"{s.index_name}: tokenizer fingerprint {s.fingerprint[:16]}... differs from "
                    f"{first.index_name} ({first.fingerprint[:16]}...); a mixture needs one tokenizer"
                )
        for s in self.sources:
            if s.samples == 0 and len(self.sources) > 1:
                raise ShardFormatError(f"{s.index_name}: holds no samples; drop it from the mixture")

    def _first_full_pass(self) -> int:
        """Mixture positions until some source has given every one of its samples once."""
        best = None
        for i, s in enumerate(self.sources):
            if s.samples == 0:
                return 0
            block, r = divmod(s.samples - 1, int(self._quota[i]))
            slot = int(np.flatnonzero((self._slot_source == i) & (self._slot_rank == r))[0])
            end = block * self._period + slot + 1
            best = end if best is None else min(best, end)
        return int(best or 0)

    # -- the order ------------------------------------------------------------------------------

    def _order(self, source: int, pass_: int) -> np.ndarray | _BlockOrder:
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
            order = _BlockOrder(src.cum_rows, self.shuffle_block, (self.seed, source, pass_))
        # keep the two most recent passes: a chunk may straddle a pass boundary
        if len(self._orders) >= 2 * len(self.sources):
            self._orders.pop(next(iter(self._orders)))
        self._orders[key] = order
        return order

    def _locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global mixture positions -> (source index, sample index inside the source)."""
        block, slot = np.divmod(positions, self._period)
        src = self._slot_source[slot]
        nth = block * self._quota[src] + self._slot_rank[slot]
        sample = np.empty(len(positions), dtype=np.int64)
        for s in np.unique(src):
            mask = src == s
            n = self.sources[s].samples
            pass_, pos = np.divmod(nth[mask], n)
            out = np.empty(len(pos), dtype=np.int64)
            for p in np.unique(pass_):
                sel = pass_ == p
                out[sel] = self._order(int(s), int(p))[pos[sel]]
            sample[mask] = out
        return src, sample

    # -- state ----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch the next sample belongs to (as far as this rank knows)."""
        return self._position()[0]

    def _position(self) -> tuple[int, int]:
        """(epoch, samples of it taken by the whole job), rolled over once the epoch is complete."""
        consumed = min(self.samples_per_epoch, self._start + self._taken * self.world_size)
        if consumed >= self.samples_per_epoch or (self.drop_last and self._taken == self._rank_total()):
            return self._epoch + 1, 0
        return self._epoch, consumed

    @property
    def consumed(self) -> int:
        """Samples of the current epoch taken by the whole job (all ranks), as of this rank's progress."""
        return self._position()[1]

    @property
    def taken(self) -> int:
        """Samples this rank has handed out since the current pass began (a resume starts a new pass)."""
        return self._taken

    def _rank_total(self) -> int:
        """Samples this rank gets from `_start` to the end of the epoch."""
        remaining = self.samples_per_epoch - self._start
        if self.drop_last:
            return remaining // self.world_size
        return max(0, -(-(remaining - self.rank) // self.world_size))

    def __len__(self) -> int:
        """Samples this rank still has in the current epoch."""
        return self._rank_total() - self._taken

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (as ``DistributedSampler.set_epoch``)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch, self._start, self._taken = int(epoch), 0, 0

    def advance(self, samples: int) -> None:
        """Record that the trainer consumed `samples` more samples of this rank (a loader calls this)."""
        if samples < 0 or self._taken + samples > self._rank_total():
            raise ValueError(f"cannot advance by {samples}: rank {self.rank} has {len(self)} samples left")
        self._taken += samples
        epoch, consumed = self._position()
        if epoch != self._epoch:
            self._epoch, self._start, self._taken = epoch, consumed, 0

    def end_epoch(self) -> None:
        """Move to the start of the next epoch (called when this rank's samples of the epoch are done)."""
        self._epoch, self._start, self._taken = self._epoch + 1, 0, 0

    def _identity(self) -> dict[str, Any]:
        """What must match for a state to mean the same order (sources first: the likeliest mistake)."""
        return {
            "sources": [
                {k: v for k, v in s.describe().items() if k != "location"} | {"name": _name(s.location)}
                for s in self.sources
            ],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_block": self.shuffle_block,
            "drop_last": self.drop_last,
            "samples_per_epoch": self.samples_per_epoch,
            "mixture_period": self._period,
        }

    def state_dict(self) -> dict[str, Any]:
        """Global progress (identical on every rank after the same number of steps) plus the config."""
        epoch, consumed = self._position()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "epoch": epoch,
            "consumed": consumed,
            "world_size": self.world_size,
            **self._identity(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from any rank's state, with this stream's rank and world size (which may differ)."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: {state.get('format')!r}")
        mine = self._identity()
        for key, value in mine.items():
            if key == "sources":
                theirs = [{k: v for k, v in s.items() if k != "name"} for s in state.get(key, [])]
                ours = [{k: v for k, v in s.items() if k != "name"} for s in value]
                if theirs != ours:
                    raise ValueError(
                        f"state was saved on other shard folders: {state.get(key)} (this stream: {value})"
                    )
            elif state.get(key) != value:
                raise ValueError(f"state has {key}={state.get(key)!r} but this stream has {value!r}")
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.samples_per_epoch:
            raise ValueError(f"state consumed={consumed} is outside the epoch of {self.samples_per_epoch}")
        self._epoch, self._start, self._taken = int(state["epoch"]), consumed, 0
        if consumed == self.samples_per_epoch:
            self.end_epoch()

    # -- reading --------------------------------------------------------------------------------

    def _cache(self, source: int) -> Any:
        cache = self._caches.get(source)
        if cache is None:
            from packing.cache import ShardCache

            src = self.sources[source]
            cache = ShardCache(
                src.location,
                cache_dir=self.cache_dir,
                max_bytes=self.cache_bytes,
                prefetch=self.prefetch,
                storage_options=self.storage_options,
                verify=self.verify_checksums,
            )
            self._caches[source] = cache
        return cache

    def _shard(self, source: int, shard: int) -> _OpenShard:
        key = (source, shard)
        opened = self._open.get(key)
        if opened is not None:
            if key != self._last_key:
                self._open.move_to_end(key)
                self._last_key = key
            return opened
        src = self.sources[source]
        entry = src.index["shards"][shard]
        if src.remote:
            path = str(self._cache(source).get(entry["path"], entry["sha256"]))
        else:
            path = os.path.join(src.location, entry["path"])
            if self.verify_checksums and key not in self._verified:
                try:
                    digest = file_sha256(path)
                except FileNotFoundError as e:
                    raise ShardFormatError(f"{path}: listed in {src.index_name} but missing") from e
                if digest != entry["sha256"]:
                    raise ShardFormatError(
                        f"{path}: sha256 {digest[:16]}... does not match {src.index_name} "
                        f"({entry['sha256'][:16]}...): the shard is corrupted or truncated; copy it again"
                    )
        self._verified.add(key)
        try:
            opened = _OpenShard(
                path, seq_len=src.seq_len, dtype=src.index["dtype"], rows=entry["rows"], where=src.index_name
            )
        except ShardFormatError as e:
            if not (src.remote and isinstance(e.__cause__, FileNotFoundError)):
                raise
            # another process (or a prefetch thread) evicted it between fetch and open: fetch again
            path = str(self._cache(source).get(entry["path"], entry["sha256"]))
            opened = _OpenShard(
                path, seq_len=src.seq_len, dtype=src.index["dtype"], rows=entry["rows"], where=src.index_name
            )
        self._open[key] = opened
        self._last_key = key
        if len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        return opened

    def _shards_of(self, src: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    def _sample(self, source: int, shard: int, row: int, sample: int) -> Sample:
        src = self.sources[source]
        ids, lengths, address = self._shard(source, shard).row(row)
        if self.release_bytes is not None:
            self._count_mapped(address, ids.nbytes)
        out: Sample = {"input_ids": ids, "doc_lengths": lengths}
        if self.want_position_ids:
            out["position_ids"] = position_ids_from_lengths(lengths, src.seq_len)
        if self.want_cu_seqlens:
            out["cu_seqlens"] = cu_seqlens_from_lengths(lengths, src.seq_len)
        if self.with_index:
            out["source_id"] = np.int64(source)
            out["sample_id"] = np.int64(sample)
        return out

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._open.clear()
            self._caches.clear()

    def _count_mapped(self, address: int, nbytes: int) -> None:
        """Note the folios a read maps: a fault maps the whole page-cache folio around it (up to 2 MiB)."""
        first, last = address // _FOLIO_BYTES, (address + nbytes - 1) // _FOLIO_BYTES
        if first == last:
            self._mapped.add(first)
        else:
            self._mapped.update(range(first, last + 1))

    def _release_pages(self) -> None:
        self._mapped.clear()
        for opened in self._open.values():
            opened.release_pages()

    def samples(
        self,
        *,
        worker: int = 0,
        num_workers: int = 1,
        block_size: int = 1,
        epoch: int | None = None,
        start: int | None = None,
        skip: int = 0,
    ) -> Iterator[Sample]:
        """This rank's samples from the current state, without advancing it.

        ``skip`` leaves out the first samples of the rank's pass (those already consumed). With
        ``num_workers > 1``, worker ``w`` takes the rank's remaining samples in blocks of ``block_size``
        (one DataLoader batch each), blocks ``w, w + num_workers, ...``. A DataLoader hands batches over
        round-robin across workers, so the main process sees the rank's samples in their order.
        """
        if not 0 <= worker < num_workers or block_size < 1:
            raise ValueError(f"worker {worker} of {num_workers}, block_size {block_size}: invalid")
        self._after_fork()
        epoch = self._epoch if epoch is None else epoch
        first = self._start if start is None else start
        remaining = self.samples_per_epoch - first
        if self.drop_last:
            total = remaining // self.world_size
        else:
            total = max(0, -(-(remaining - self.rank) // self.world_size))
        base = epoch * self.samples_per_epoch + first + self.rank
        step = self.world_size
        # resolve chunk c + 1 before reading chunk c, so remote shards are fetched one chunk ahead
        current = None
        for j in self._worker_chunks(total, skip, worker, num_workers, block_size):
            resolved = self._resolve(base + j * step)
            if current is not None:
                yield from self._read(current, resolved)
            current = resolved
        if current is not None:
            yield from self._read(current, None)

    @staticmethod
    def _worker_chunks(
        total: int, skip: int, worker: int, num_workers: int, block_size: int
    ) -> Iterator[np.ndarray]:
        """Rank-local sample numbers of one worker, in order, about `_CHUNK` at a time.

        Blocks of `block_size` are counted from `skip`; the worker owns blocks worker, worker + n, ...
        """
        if num_workers == 1:
            for lo in range(skip, total, _CHUNK):
                yield np.arange(lo, min(total, lo + _CHUNK), dtype=np.int64)
            return
        blocks_per_chunk = max(1, _CHUNK // block_size)
        offsets = np.arange(block_size, dtype=np.int64)
        k = worker
        while skip + k * block_size < total:
            ks = k + num_workers * np.arange(blocks_per_chunk, dtype=np.int64)
            j = (skip + ks[:, None] * block_size + offsets).ravel()
            yield j[j < total]
            k += num_workers * blocks_per_chunk

    def _resolve(self, positions: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Positions -> (source, shard, row, sample) tuples, vectorized over the chunk."""
        src, sample = self._locate(positions)
        shard, row = self._shards_of(src, sample)
        return list(zip(src.tolist(), shard.tolist(), row.tolist(), sample.tolist(), strict=True))

    def _read(
        self, current: list[tuple[int, int, int, int]], ahead: list[tuple[int, int, int, int]] | None
    ) -> Iterator[Sample]:
        remote = any(s.remote for s in self.sources)
        release = self.release_bytes
        for i, (s, sh, r, x) in enumerate(current):
            if remote and (s, sh) not in self._open:
                self._prefetch(current[i:] + (ahead or []))
            yield self._sample(s, sh, r, x)
            if release is not None and len(self._mapped) * _FOLIO_BYTES >= release:
                self._release_pages()

    def _prefetch(self, upcoming: list[tuple[int, int, int, int]]) -> None:
        """Ask each remote cache for the shards of the coming samples, in order of need."""
        wanted: dict[int, dict[int, None]] = {}
        for s, sh, _, _ in upcoming:
            if self.sources[s].remote and (s, sh) not in self._open:
                wanted.setdefault(s, {})[sh] = None
        for s, shards in wanted.items():
            entries = self.sources[s].index["shards"]
            self._cache(s).prefetch([(entries[i]["path"], entries[i]["sha256"]) for i in shards])

    def __iter__(self) -> Iterator[Sample]:
        """The rest of this rank's current epoch; progress is counted as samples are handed out."""
        for sample in self.samples(skip=self._taken):
            self._taken += 1
            yield sample
        self.end_epoch()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_caches"] = {}
        state["_orders"] = {}
        state["_mapped"] = set()
        state["_last_key"] = None
        return state

    def __repr__(self) -> str:
        names = ", ".join(f"{_name(s.location)}:{s.weight:g}" for s in self.sources)
        return (
            f"ShardStream([{names}], rank={self.rank}, world_size={self.world_size}, seed={self.seed}, "
            f"epoch={self.epoch}, consumed={self.consumed}/{self.samples_per_epoch})"
        )


def _name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


__all__ = ["ShardStream", "cu_seqlens_from_lengths", "position_ids_from_lengths"]
