"""Optional PyTorch adapter: a DataLoader over one rank's `ShardStream` whose state stays exact.

The contract (why a wrapper and not a bare IterableDataset): DataLoader workers read ahead, so the samples
a worker has produced are not the samples the trainer has consumed. `StreamLoader` gives worker ``w`` whole
batches ``w, w + num_workers, ...`` of the rank's order; DataLoader returns batches round-robin across
workers, so the main process receives the rank's samples in order. The loader counts the samples of each
batch as it hands the batch to the trainer, and ``state_dict()`` is the stream's state after exactly those.
Prefetched batches that were never handed out are read again after a resume.

Batches are compact by default (int32 ids and document boundaries, a third of the full layout's bytes):
`to_device` builds labels and positions on the device, the same as ``compact=False`` would have sent.

Install with the ``torch`` extra (``pip install 'longtrove[torch]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from packing.remote import RemoteUnavailableError
from packing.stream import ShardStream

IGNORE_INDEX = -100


def token_ids_int32(ids: np.ndarray) -> np.ndarray:
    """Token ids as int32 without a copy where possible (uint32 ids below 2**31 reinterpret as-is)."""
    if ids.dtype == np.uint32:
        return ids.view(np.int32)  # vocabularies stay far below 2**31; checked by the shard writer's dtype
    return ids.astype(np.int32)


INLINE_BYTES = 2 * 2**20
"""Storages up to this size cross from a DataLoader worker inside the pickled message (through the pipe).

Measured on 2 cores with 2 workers: for batches of 0.25-2 MiB, copying the bytes through the worker's pipe
costs a quarter to a third less CPU than a shared-memory segment, whose creation, page faults,
file-descriptor passing (a socket round trip) and unmapping are paid per batch; at 6 MiB the pipe (64 KiB
at a time, a context switch each) costs twice as much. Larger storages go through shared memory.
"""


def concatenate_ids(rows: Sequence[np.ndarray], *, out: np.ndarray) -> None:
    """Token rows laid end to end into the int32 array `out`; uint32 rows are copied as they are."""
    if all(r.dtype == np.uint32 for r in rows):  # ids stay below 2**31: the bits are the same
        np.concatenate(rows, out=out.view(np.uint32))
    else:
        np.concatenate(rows, out=out, casting="unsafe")


def int32_buffer(size: int) -> torch.Tensor:
    """A flat int32 tensor; in a DataLoader worker and above `INLINE_BYTES`, in shared memory from the start.

    Writing a large batch straight into one shared storage (as torch's own ``default_collate`` does) saves
    the copy into shared memory when the batch is sent; smaller batches travel inline (see `INLINE_BYTES`).
    """
    if get_worker_info() is None or 4 * size <= INLINE_BYTES:
        return torch.empty(size, dtype=torch.int32)
    like = torch.empty(0, dtype=torch.int32)
    return like.new(like._typed_storage()._new_shared(size)).resize_(size)


def batch_segments(samples: Sequence[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-empty segment of the rows laid end to end: (lengths, is a document, carries a loss).

    A row's padding tail is one more segment (not a document). Segments of samples marked
    ``is_padding`` carry no loss. Vectorized over the batch: no Python work per document.
    """
    docs = [np.asarray(s["doc_lengths"]) for s in samples]
    counts = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat = np.concatenate(docs).astype(np.int64, copy=False)
    row_len = np.fromiter((len(s["input_ids"]) for s in samples), dtype=np.int64, count=len(samples))
    ends = np.cumsum(counts)
    running = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(flat, out=running[1:])
    tails = row_len - (running[ends] - running[ends - counts])
    bad_rows = tails < 0
    if (flat < 0).any():
        bad_rows[np.searchsorted(ends, np.flatnonzero(flat < 0), side="right")] = True
    if bad_rows.any():
        bad = int(np.flatnonzero(bad_rows)[0])
        raise ValueError(
            f"sample {bad} of the batch: doc_lengths {docs[bad].tolist()[:8]} do not fit a row of "
            f"{int(row_len[bad])} tokens"
        )
    tail_at = ends + np.arange(len(samples))  # where each row's tail goes, after the row's documents
    is_doc = np.ones(len(flat) + len(samples), dtype=bool)
    is_doc[tail_at] = False
    lengths = np.empty(len(is_doc), dtype=np.int64)
    lengths[is_doc] = flat
    lengths[tail_at] = tails
    padding = np.fromiter((bool(s.get("is_padding", False)) for s in samples), dtype=bool, count=len(samples))
    has_loss = is_doc & np.repeat(~padding, counts + 1) if padding.any() else is_doc
    keep = lengths > 0
    return lengths[keep], is_doc[keep], has_loss[keep]


class CompactBatch(dict):
    """A ``collate(compact=True)`` batch: asking it for what `to_device` builds says so."""

    derived: tuple[str, ...] = ("labels", "position_ids")

    def __missing__(self, key: str) -> Any:
        if key in self.derived:
            raise KeyError(
                f"{key}: a compact batch carries ids and boundaries only; to_device(batch, device) builds "
                f"{', '.join(self.derived)} on the device (or make the loader with compact=False)"
            )
        raise KeyError(key)

    @staticmethod
    def expand_on_device(batch: dict[str, Any]) -> None:
        _expand_compact(batch)


def collate(
    samples: Sequence[dict[str, np.ndarray]],
    *,
    flatten: bool = False,
    ignore_index: int = IGNORE_INDEX,
    mask_document_starts: bool = True,
    compact: bool = False,
) -> dict[str, torch.Tensor | int]:
    """Build ``input_ids``, ``labels``, ``position_ids``, ``cu_seqlens`` and ``max_seqlen`` from samples.

    ``labels`` follow the Hugging Face convention (aligned with ``input_ids``; the model shifts them):
    padding is ``ignore_index``, and so is the first token of every document when
    ``mask_document_starts`` (with per-document attention it cannot be predicted from the previous
    document, as ``DataCollatorWithFlattening`` does), and so is every token of a sample that only pads a
    rank to an even share (``is_padding``). ``cu_seqlens`` (int32) holds the boundaries of every
    document of the batch laid end to end, the padding tail of a row being a segment of its own.
    Rows of one length stack to ``(batch, seq_len)``; ``flatten=True`` concatenates them to
    ``(1, total)``, which also takes rows of different lengths (a mixture of 1M- and 4K-token sources).

    Ids, labels, positions and ``cu_seqlens`` are int32 views of one storage, which `StreamLoader` sends
    from a DataLoader worker once (see `_Shipped`); `to_device` widens them on the device.
    ``compact=True`` (`StreamLoader`'s default) carries only the ids (4 bytes a token) plus the segment
    boundaries: `to_device` then builds the same labels and positions on the device.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(s["input_ids"]) for s in samples]
    if not flatten and len(set(lengths)) > 1:
        raise ValueError(
            f"samples of different lengths {sorted(set(lengths))} cannot stack; use flatten=True or batch_size=1"
        )
    seg, is_doc, has_loss = batch_segments(samples)
    total = int(sum(lengths))
    buffer = int32_buffer(total if compact else 3 * total + len(seg) + 1)
    flat = buffer.numpy()
    ids = flat[:total]
    concatenate_ids([s["input_ids"] for s in samples], out=ids)
    shape = (1, total) if flatten else (len(samples), lengths[0])
    if compact:
        cu_small = np.zeros(len(seg) + 1, dtype=np.int32)
        np.cumsum(seg, out=cu_small[1:])
        batch: dict[str, torch.Tensor | int] = CompactBatch(
            {
                "input_ids": buffer.view(shape),
                "cu_seqlens": torch.from_numpy(cu_small),
                "max_seqlen": int(seg.max()),
                "segment_has_loss": torch.from_numpy(has_loss),
                "ignore_index": ignore_index,
                "mask_document_starts": mask_document_starts,
            }
        )
        return _with_sample_keys(batch, samples)
    labels, positions, cu = flat[total : 2 * total], flat[2 * total : 3 * total], flat[3 * total :]
    cu[0] = 0
    np.cumsum(seg, out=cu[1:])
    starts = cu[:-1]
    np.subtract(np.arange(total, dtype=np.int32), np.repeat(starts, seg), out=positions)
    labels[:] = ids
    no_loss = ~has_loss
    # segments without a loss are few (row tails, samples that only pad a rank): slices, not a token mask
    for lo, hi in zip(starts[no_loss].tolist(), cu[1:][no_loss].tolist(), strict=True):
        labels[lo:hi] = ignore_index
    if mask_document_starts:
        labels[starts[is_doc]] = ignore_index
    batch = {
        "input_ids": buffer[:total].view(shape),
        "labels": buffer[total : 2 * total].view(shape),
        "position_ids": buffer[2 * total : 3 * total].view(shape),
        "cu_seqlens": buffer[3 * total :],
        "max_seqlen": int(seg.max()),
    }
    return _with_sample_keys(batch, samples)


def _with_sample_keys(batch: dict[str, Any], samples: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per-sample flags and provenance: ``is_padding`` (bool), ``source_id``/``sample_id`` (int64)."""
    if "is_padding" in samples[0]:
        batch["is_padding"] = torch.tensor([bool(s.get("is_padding", False)) for s in samples])
    for key in ("source_id", "sample_id"):
        if key in samples[0]:
            batch[key] = torch.tensor([int(s[key]) for s in samples], dtype=torch.int64)
    return batch


WIDENED_KEYS = frozenset({"input_ids", "labels", "position_ids", "tokens"})


def to_device(
    batch: dict[str, Any], device: torch.device | str, *, widen: frozenset[str] = WIDENED_KEYS
) -> dict[str, Any]:
    """Move a batch to `device`, widening the int32 id tensors in `widen` to int64 there (not before).

    Embedding lookups take int32, but losses (``cross_entropy``) want int64 targets; converting after
    the copy keeps the host-to-device transfer, like the worker-to-trainer one, at 4 bytes a token.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key in widen and value.dtype == torch.int32:
                value = value.long()
        out[key] = value
    if isinstance(batch, CompactBatch):  # labels and positions (and so on) are built here, on the device
        batch.expand_on_device(out)
    elif "segment_has_loss" in out:  # a compact batch that lost its type on the way
        _expand_compact(out)
    return out


def _expand_compact(batch: dict[str, Any]) -> None:
    """Labels and positions of a ``collate(compact=True)`` batch, with torch ops on its device.

    The result has the keys, dtypes and values of ``to_device(collate(..., compact=False))``.
    """
    ids = batch["input_ids"]
    cu = batch["cu_seqlens"].long()
    lengths = cu[1:] - cu[:-1]
    starts = cu[:-1]
    total = ids.numel()
    positions = torch.arange(total, device=ids.device) - torch.repeat_interleave(
        starts, lengths, output_size=total
    )
    has_loss = batch.pop("segment_has_loss")
    ignore_index = batch.pop("ignore_index")
    labels = ids.reshape(-1).clone()
    labels[~torch.repeat_interleave(has_loss, lengths, output_size=total)] = ignore_index
    if batch.pop("mask_document_starts"):
        labels[starts[has_loss]] = ignore_index
    batch["labels"] = labels.view(ids.shape)
    batch["position_ids"] = positions.view(ids.shape)


class StreamDataset(IterableDataset):
    """The samples of one rank from a fixed point, split across DataLoader workers in whole batches."""

    def __init__(self, stream: ShardStream, batch_size: int, *, epoch: int, start: int, skip: int) -> None:
        super().__init__()
        self.stream = stream
        self.batch_size = batch_size
        self.epoch, self.start, self.skip = epoch, start, skip
        self.reported: set = set(stream._verified)  # verified shards the main process already knows

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return self.stream.samples(
            worker=worker,
            num_workers=workers,
            block_size=self.batch_size,
            epoch=self.epoch,
            start=self.start,
            skip=self.skip,
        )


class _Counted:
    """Collate in the worker; say how many samples the batch holds and which shards the worker verified.

    The verified shards go back to the main process, so the workers of the next epoch (started from it)
    do not hash the same shards again. The batch crosses to the main process as `_Shipped`. Picklable
    for spawn.
    """

    def __init__(self, collate_fn: Callable[[list[dict[str, np.ndarray]]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[dict[str, np.ndarray]]) -> tuple[int, set, Any]:
        info = get_worker_info()
        verified: set = set()
        if info is not None:
            dataset = info.dataset
            verified = dataset.stream._verified - dataset.reported
            dataset.reported |= verified
        batch = self.collate_fn(samples)
        if info is not None and isinstance(batch, dict):
            batch = _Shipped(batch)
        return len(samples), verified, batch


class _Shipped:
    """A batch dict on its way from a worker: each storage sent once, tensors rebuilt as views of it.

    torch pickles every tensor's storage on its own, in shared memory (a segment and a file-descriptor
    round trip per tensor), even when the tensors are views of one storage, as `collate`'s are. Here the
    tensors of one storage travel as that storage once plus (dtype, offset, shape, stride) each: inline in
    the message (as numpy bytes) up to `INLINE_BYTES`, else as a shared-memory tensor.
    """

    def __init__(self, batch: dict[str, Any]) -> None:
        self.bases: list[Any] = []
        where: dict[int, int] = {}  # storage address -> index in bases
        self.items: dict[str, Any] = {}
        self.kind = type(batch) if isinstance(batch, CompactBatch) else dict
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor) or value.device.type != "cpu":
                self.items[key] = value
                continue
            storage = value.untyped_storage()
            base = where.get(storage.data_ptr())
            if base is None:
                base = where[storage.data_ptr()] = len(self.bases)
                flat = torch.empty(0, dtype=torch.uint8).set_(storage)
                inline = storage.nbytes() <= INLINE_BYTES and not storage.is_shared()
                self.bases.append(_Inline(flat.numpy()) if inline else flat)
            self.items[key] = _View(base, value.dtype, value.storage_offset(), value.shape, value.stride())

    def unpack(self, *, pin: bool = False) -> dict[str, Any]:
        bases = [torch.from_numpy(b.array) if isinstance(b, _Inline) else b for b in self.bases]
        storages = [(b.pin_memory() if pin else b).untyped_storage() for b in bases]
        out: dict[str, Any] = {}
        for key, value in self.items.items():
            if isinstance(value, _View):
                value = torch.empty(0, dtype=value.dtype).set_(
                    storages[value.base], value.offset, value.shape, value.stride
                )
            out[key] = value
        return self.kind(out)

    def pin_memory(self) -> dict[str, Any]:
        """What DataLoader's ``pin_memory=True`` calls: each storage pinned once, the views rebuilt on it."""
        return self.unpack(pin=True)


class _Inline:
    """The bytes of a storage, pickled with the message; a tensor's storage again in the main process."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class _View:
    """Where a tensor sits in one of the storages a `_Shipped` batch carries."""

    def __init__(self, base: int, dtype: torch.dtype, offset: int, shape: torch.Size, stride: tuple) -> None:
        self.base, self.dtype, self.offset = base, dtype, offset
        self.shape, self.stride = tuple(shape), tuple(stride)


class StreamLoader:
    """A DataLoader over one rank's stream, one epoch per ``iter()``, with an exact ``state_dict()``.

    Args:
        stream: the rank's `ShardStream` (its rank and world size are the trainer's).
        batch_size: samples per batch of this rank.
        num_workers: DataLoader worker processes; each reads whole batches.
        collate_fn: defaults to `collate` with ``flatten``/``ignore_index``/``compact``.
        compact: ``True`` (default): workers send only the ids (int32) and the segment boundaries, and
            `to_device` builds ``labels`` and ``position_ids`` on the device (exactly those of
            ``compact=False``); a batch is 4 bytes a token, a third of the full layout, which is what keeps
            the workers ahead of the trainer. ``False``: workers send the full layout (ids, labels,
            positions, ``cu_seqlens``, int32 views of one storage).
        **loader_kwargs: passed to ``torch.utils.data.DataLoader`` (``pin_memory``, ``prefetch_factor``,
            ``multiprocessing_context``, ...). Workers are started for each epoch, never persistent,
            because they must start from the loader's state.
    """

    def __init__(
        self,
        stream: ShardStream,
        batch_size: int = 1,
        *,
        num_workers: int = 0,
        collate_fn: Callable[[list[dict[str, np.ndarray]]], Any] | None = None,
        flatten: bool = False,
        ignore_index: int = IGNORE_INDEX,
        compact: bool = True,
        **loader_kwargs: Any,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if loader_kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers cannot follow a resumed state; leave it off")
        for key in ("shuffle", "sampler", "batch_sampler", "drop_last"):
            if key in loader_kwargs:
                raise ValueError(f"{key}= belongs to the ShardStream, not the DataLoader")
        self.stream = stream
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn or partial(
            collate, flatten=flatten, ignore_index=ignore_index, compact=compact
        )
        self.loader_kwargs = loader_kwargs

    def __len__(self) -> int:
        """Batches left in this rank's current epoch."""
        return -(-len(self.stream) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        stream = self.stream
        epoch = stream._epoch
        dataset = StreamDataset(stream, self.batch_size, epoch=epoch, start=stream._start, skip=stream.taken)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_Counted(self.collate_fn),
            **self.loader_kwargs,
        )
        try:
            for count, verified, batch in loader:
                stream.advance(count)
                stream._verified |= verified
                if isinstance(batch, _Shipped):
                    batch = batch.unpack()
                yield batch
        except RemoteUnavailableError as e:
            raise e.with_state(self.state_dict()) from e
        if stream._epoch == epoch:
            stream.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The stream's state after the batches handed to the trainer (not those prefetched)."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


__all__ = [
    "IGNORE_INDEX",
    "INLINE_BYTES",
    "CompactBatch",
    "StreamDataset",
    "StreamLoader",
    "batch_segments",
    "collate",
    "concatenate_ids",
    "to_device",
    "token_ids_int32",
]
