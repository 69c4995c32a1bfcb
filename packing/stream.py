"""Shards to a deterministic, resumable stream of samples for every trainer rank.

Why it is built this way:

- **One global order per epoch** (``packing.order``). Every rank computes the same order of all samples
  from ``(seed, epoch)``. Position ``k`` of that order, counted from where the job last resumed, goes to
  rank ``k % world_size``; inside a rank, DataLoader workers take whole batches round-robin. So every
  sample of an epoch is read exactly once across all ranks and workers; by default the ranks short of an
  even share repeat a few samples (marked ``is_padding``) so that every rank takes as many steps.
- **Progress is global** (``packing.state``). The state is "``consumed`` samples of epoch ``e`` taken by
  the whole job", so any rank's state resumes the job, and a new ``world_size`` simply deals the rest of
  the epoch round-robin from that offset: nothing repeated, nothing skipped.
- **Zero-copy reads** (``packing.mapped``). Shards are memory-mapped; a sample is a numpy view of its
  record batch, located by ``searchsorted`` over cumulative row counts. There is no per-token Python.
- **Mixtures** (``packing.sources``, ``packing.order``) interleave shard folders with a fixed periodic
  schedule, so position ``k`` maps to (source, n-th sample of that source) in O(1) and a resume needs no
  replay. Remote folders are read through a bounded local cache (``packing.cache``) that survives network
  failures for a configurable window (``packing.remote``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from packing.format import ShardFormatError, file_sha256, read_index
from packing.mapped import MappedPages, MappedShard
from packing.order import MixtureOrder
from packing.remote import DEFAULT_RETRY_WINDOW, RemoteUnavailableError
from packing.segments import cu_seqlens_from_lengths, position_ids_from_lengths
from packing.sources import ShardSource, check_mixture, is_url, parse_source, source_name
from packing.state import BALANCES, Balance, check_state, make_state, rank_share

DEFAULT_MIXTURE_PERIOD = 10_000
_CHUNK = 256  # samples resolved per vectorized step


Sample = dict[str, np.ndarray]
_Located = tuple[int, int, int, int, bool]  # source, shard, row, sample, is_padding


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
        balance: how the ranks share an epoch that does not divide evenly, so that DDP collectives never
            wait on a rank that ran out. ``"pad"`` (default): every rank gets ``ceil(remaining /
            world_size)`` samples; the few ranks short of that repeat samples from the start of the pass,
            marked ``is_padding`` (collators give them no loss). ``"drop"``: every rank gets
            ``remaining // world_size`` and the leftover (fewer than ``world_size``) is skipped that epoch.
            ``"uneven"``: ranks differ by at most one sample. Not part of the state: a resumed job may
            choose another.
        drop_last: ``True`` is ``balance="drop"`` (kept for older callers).
        position_ids, cu_seqlens: also yield these int32 arrays per sample.
        with_index: also yield ``source_id`` and ``sample_id`` (int64 scalars) for provenance.
        verify_checksums: compare each shard's sha256 to the index on first open in this process
            (remote shards: on download).
        samples_per_epoch: mixture epoch length; default: until the first source completes a full pass.
        mixture_period: slots of the periodic mixture schedule; realized shares are exact per period.
        cache_dir, cache_bytes, prefetch, storage_options: remote folders only (see ``packing.cache``).
            ``cache_bytes`` bounds the shards on disk and, separately, the remote shards this process
            keeps mapped (a shard the cache evicted is unmapped before the next one is opened).
        retry_window: seconds a remote folder may stay unreachable (refused, reset, 5xx, timeouts) while
            reads are retried with backoff; then `RemoteUnavailableError` names the URL and the state to
            resume from.
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
        balance: Balance | None = None,
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
        retry_window: float = DEFAULT_RETRY_WINDOW,
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
        if balance is None:
            balance = "drop" if drop_last else "pad"
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
        self.balance: Balance = balance
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
        self.retry_window = float(retry_window)

        self.sources = [self._load_source(loc, w) for loc, w in parse_source(source)]
        check_mixture(self.sources)
        self.order = MixtureOrder(
            self.sources,
            seed=self.seed,
            shuffle=shuffle,
            shuffle_block=shuffle_block,
            mixture_period=mixture_period,
        )
        self.samples_per_epoch = (
            int(samples_per_epoch) if samples_per_epoch is not None else self.order.first_full_pass()
        )
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if self.samples_per_epoch < 1:
            raise ShardFormatError(f"{self.sources[0].index_name}: holds no samples (no rows in any shard)")

        self._epoch = 0
        self._start = 0  # global offset in the epoch where the current pass of this rank began
        self._taken = 0  # samples this rank has taken since _start
        self._open: OrderedDict[tuple[int, int], MappedShard] = OrderedDict()
        self._verified: set[tuple[int, int]] = set()
        self._caches: dict[int, Any] = {}
        self._pid = os.getpid()
        self._mapped = MappedPages()  # folios read since pages were last released
        self._last_key: tuple[int, int] | None = None

    # -- loading --------------------------------------------------------------------------------

    def _load_source(self, location: str, weight: float) -> ShardSource:
        if is_url(location):
            from packing.cache import ShardCache

            cache = ShardCache(
                location,
                cache_dir=self.cache_dir,
                max_bytes=self.cache_bytes,
                prefetch=self.prefetch,
                storage_options=self.storage_options,
                verify=self.verify_checksums,
                retry_window=self.retry_window,
            )
            index = cache.read_index()
            return ShardSource(location, weight, index, remote=True)
        return ShardSource(location, weight, read_index(location), remote=False)

    # -- state ----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch the next sample belongs to (as far as this rank knows)."""
        return self._position()[0]

    def _position(self) -> tuple[int, int]:
        """(epoch, samples of it taken by the whole job), rolled over once the epoch is complete."""
        consumed = min(self.samples_per_epoch, self._start + self._taken * self.world_size)
        if consumed >= self.samples_per_epoch or (
            self.balance == "drop" and self._taken == self._rank_total()
        ):
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
        return rank_share(self.samples_per_epoch - self._start, self.rank, self.world_size, self.balance)

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
                {k: v for k, v in s.describe().items() if k != "location"} | {"name": source_name(s.location)}
                for s in self.sources
            ],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_block": self.shuffle_block,
            "samples_per_epoch": self.samples_per_epoch,
            "mixture_period": self.order.period,
        }

    def state_dict(self) -> dict[str, Any]:
        """Global progress (identical on every rank after the same number of steps) plus the config."""
        epoch, consumed = self._position()
        return make_state(epoch, consumed, self.world_size, self._identity()) | {"balance": self.balance}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from any rank's state, with this stream's rank and world size (which may differ)."""
        epoch, consumed = check_state(state, self._identity(), self.samples_per_epoch)
        self._epoch, self._start, self._taken = epoch, consumed, 0
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
                retry_window=self.retry_window,
            )
            self._caches[source] = cache
        return cache

    def _shard(self, source: int, shard: int) -> MappedShard:
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
            self._unmap_evicted()
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
            opened = MappedShard(
                path, seq_len=src.seq_len, dtype=src.index["dtype"], rows=entry["rows"], where=src.index_name
            )
        except ShardFormatError as e:
            if not (src.remote and isinstance(e.__cause__, FileNotFoundError)):
                raise
            # another process (or a prefetch thread) evicted it between fetch and open: fetch again
            path = str(self._cache(source).get(entry["path"], entry["sha256"]))
            opened = MappedShard(
                path, seq_len=src.seq_len, dtype=src.index["dtype"], rows=entry["rows"], where=src.index_name
            )
        self._open[key] = opened
        self._last_key = key
        if len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        if src.remote:
            self._bound_remote_maps(keep=key)
        return opened

    def _unmap_evicted(self) -> None:
        """Drop the maps of remote shards a cache (this process's or another's) has deleted.

        A deleted file stays on disk while mapped; dropping the map lets the kernel free it, so the
        cache's byte limit holds for what is really stored.
        """
        for key in [
            k for k, m in self._open.items() if self.sources[k[0]].remote and not os.path.exists(m.path)
        ]:
            del self._open[key]
            self._last_key = None

    def _bound_remote_maps(self, keep: tuple[int, int]) -> None:
        """Keep the remote shards mapped by this process within ``cache_bytes`` (least recent out first)."""
        remote = [(k, m.nbytes) for k, m in self._open.items() if self.sources[k[0]].remote]
        total = sum(n for _, n in remote)
        for k, n in remote:
            if total <= self.cache_bytes:
                break
            if k != keep:
                del self._open[k]
                total -= n
                self._last_key = None

    def _sample(self, source: int, shard: int, row: int, sample: int, padding: bool) -> Sample:
        src = self.sources[source]
        ids, lengths, address = self._shard(source, shard).row(row)
        if self.release_bytes is not None:
            self._mapped.note(address, ids.nbytes)
        out: Sample = {"input_ids": ids, "doc_lengths": lengths}
        if self.want_position_ids:
            out["position_ids"] = position_ids_from_lengths(lengths, src.seq_len)
        if self.want_cu_seqlens:
            out["cu_seqlens"] = cu_seqlens_from_lengths(lengths, src.seq_len)
        if self.balance == "pad":
            out["is_padding"] = np.bool_(padding)
        if self.with_index:
            out["source_id"] = np.int64(source)
            out["sample_id"] = np.int64(sample)
        return out

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._open.clear()
            self._caches.clear()

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
        total = rank_share(remaining, self.rank, self.world_size, self.balance)
        base = first + self.rank
        step = self.world_size
        # resolve chunk c + 1 before reading chunk c, so remote shards are fetched one chunk ahead
        current = None
        for j in self._worker_chunks(total, skip, worker, num_workers, block_size):
            resolved = self._resolve(epoch, base + j * step)
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

    def _resolve(self, epoch: int, offsets: np.ndarray) -> list[_Located]:
        """Offsets in the epoch -> (source, shard, row, sample, is_padding), vectorized over the chunk.

        Offsets past the end of the epoch (``balance="pad"``) wrap to the start of the epoch, so the
        repeats do not depend on where the job last resumed.
        """
        spe = self.samples_per_epoch
        padding = offsets >= spe
        if padding.any():
            offsets = np.where(padding, (offsets - spe) % spe, offsets)
        src, sample = self.order.locate(epoch * spe + offsets)
        shard, row = self.order.shards_of(src, sample)
        return list(
            zip(src.tolist(), shard.tolist(), row.tolist(), sample.tolist(), padding.tolist(), strict=True)
        )

    def _read(self, current: list[_Located], ahead: list[_Located] | None) -> Iterator[Sample]:
        remote = any(s.remote for s in self.sources)
        release = self.release_bytes
        for i, (s, sh, r, x, pad) in enumerate(current):
            if remote and (s, sh) not in self._open:
                self._prefetch(current[i:] + (ahead or []))
            yield self._sample(s, sh, r, x, pad)
            if release is not None and self._mapped.nbytes >= release:
                self._release_pages()

    def _prefetch(self, upcoming: list[_Located]) -> None:
        """Ask each remote cache for the shards of the coming samples, in order of need."""
        wanted: dict[int, dict[int, None]] = {}
        for s, sh, *_ in upcoming:
            if self.sources[s].remote and (s, sh) not in self._open:
                wanted.setdefault(s, {})[sh] = None
        for s, shards in wanted.items():
            entries = self.sources[s].index["shards"]
            self._cache(s).prefetch([(entries[i]["path"], entries[i]["sha256"]) for i in shards])

    def __iter__(self) -> Iterator[Sample]:
        """The rest of this rank's current epoch; progress is counted as samples are handed out."""
        try:
            for sample in self.samples(skip=self._taken):
                self._taken += 1
                yield sample
        except RemoteUnavailableError as e:
            raise e.with_state(self.state_dict()) from e
        self.end_epoch()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_caches"] = {}
        state["_mapped"] = MappedPages()
        state["_last_key"] = None
        return state

    def __repr__(self) -> str:
        names = ", ".join(f"{source_name(s.location)}:{s.weight:g}" for s in self.sources)
        return (
            f"ShardStream([{names}], rank={self.rank}, world_size={self.world_size}, seed={self.seed}, "
            f"epoch={self.epoch}, consumed={self.consumed}/{self.samples_per_epoch})"
        )


__all__ = ["ShardStream", "cu_seqlens_from_lengths", "position_ids_from_lengths"]
