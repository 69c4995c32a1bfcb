"""Optional PyTorch adapter: a DataLoader over one rank's `ShardStream` whose state stays exact.

The contract (why a wrapper and not a bare IterableDataset): DataLoader workers read ahead, so the samples
a worker has produced are not the samples the trainer has consumed. `StreamLoader` gives worker ``w`` whole
batches ``w, w + num_workers, ...`` of the rank's order; DataLoader returns batches round-robin across
workers, so the main process receives the rank's samples in order. The loader counts the samples of each
batch as it hands the batch to the trainer, and ``state_dict()`` is the stream's state after exactly those.
Prefetched batches that were never handed out are read again after a resume.

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
from packing.segments import segments
from packing.stream import ShardStream

IGNORE_INDEX = -100


def token_ids_int32(ids: np.ndarray) -> np.ndarray:
    """Token ids as int32 without a copy where possible (uint32 ids below 2**31 reinterpret as-is)."""
    if ids.dtype == np.uint32:
        return ids.view(np.int32)  # vocabularies stay far below 2**31; checked by the shard writer's dtype
    return ids.astype(np.int32)


def int32_buffer(size: int) -> torch.Tensor:
    """A flat int32 tensor; inside a DataLoader worker, allocated in shared memory from the start.

    A worker hands a batch over through shared memory, one segment per storage. Writing the batch straight
    into one shared storage (as torch's own ``default_collate`` does) saves both the extra copy and a
    segment per tensor.
    """
    if get_worker_info() is None:
        return torch.empty(size, dtype=torch.int32)
    like = torch.empty(0, dtype=torch.int32)
    return like.new(like._typed_storage()._new_shared(size)).resize_(size)


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

    Ids, labels and positions are int32 views of one storage, half the bytes of int64 to carry from a
    DataLoader worker; `to_device` widens them on the device. ``compact=True`` carries only the ids (4
    bytes a token) plus the segment boundaries: `to_device` then builds the same labels and positions on
    the device, which is what a loader whose workers must outrun the trainer wants.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(s["input_ids"]) for s in samples]
    if not flatten and len(set(lengths)) > 1:
        raise ValueError(
            f"samples of different lengths {sorted(set(lengths))} cannot stack; use flatten=True or batch_size=1"
        )
    rows = [segments(s["doc_lengths"], n) for s, n in zip(samples, lengths, strict=True)]
    seg = np.concatenate(rows)  # every document, and every row's padding tail, in order
    total = int(sum(lengths))
    buffer = int32_buffer(total if compact else 3 * total + len(seg) + 1)
    flat = buffer.numpy()
    ids = flat[:total]
    if all(s["input_ids"].dtype == np.uint32 for s in samples):
        np.concatenate([s["input_ids"] for s in samples], out=ids.view(np.uint32))
    else:
        ids[:] = np.concatenate([np.asarray(s["input_ids"], dtype=np.int64) for s in samples])
    # which segments are padding tails or belong to padding samples, and which are documents
    is_doc = np.concatenate(
        [
            np.arange(len(r)) < np.count_nonzero(np.asarray(s["doc_lengths"]))
            for s, r in zip(samples, rows, strict=True)
        ]
    )
    real = np.concatenate(
        [np.full(len(r), not bool(s.get("is_padding", False))) for s, r in zip(samples, rows, strict=True)]
    )
    shape = (1, total) if flatten else (len(samples), lengths[0])
    if compact:
        cu_small = np.zeros(len(seg) + 1, dtype=np.int32)
        np.cumsum(seg, out=cu_small[1:])
        batch: dict[str, torch.Tensor | int] = {
            "input_ids": buffer.view(shape),
            "cu_seqlens": torch.from_numpy(cu_small),
            "max_seqlen": int(seg.max()),
            "segment_has_loss": torch.from_numpy(is_doc & real),
            "ignore_index": ignore_index,
            "mask_document_starts": mask_document_starts,
        }
        return _with_sample_keys(batch, samples)
    labels, positions, cu = flat[total : 2 * total], flat[2 * total : 3 * total], flat[3 * total :]
    cu[0] = 0
    np.cumsum(seg, out=cu[1:])
    seg_starts = cu[:-1].astype(np.int64)
    np.subtract(np.arange(total, dtype=np.int64), np.repeat(seg_starts, seg), out=positions, casting="unsafe")
    labels[:] = ids
    labels[np.repeat(~(is_doc & real), seg)] = ignore_index
    if mask_document_starts:
        labels[seg_starts[is_doc]] = ignore_index
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
    if "segment_has_loss" in out:  # a compact batch: labels and positions are built here, on the device
        _expand_compact(out)
    return out


def _expand_compact(batch: dict[str, Any]) -> None:
    """Labels and positions of a ``collate(compact=True)`` batch, with torch ops on its device."""
    ids = batch["input_ids"]
    cu = batch["cu_seqlens"].long()
    lengths = cu[1:] - cu[:-1]
    starts = cu[:-1]
    total = ids.numel()
    positions = torch.arange(total, device=ids.device) - torch.repeat_interleave(
        starts, lengths, output_size=total
    )
    has_loss = batch.pop("segment_has_loss")
    labels = ids.reshape(-1).clone()
    labels[~torch.repeat_interleave(has_loss, lengths, output_size=total)] = batch["ignore_index"]
    if batch["mask_document_starts"]:
        labels[starts[has_loss]] = batch["ignore_index"]
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
    do not hash the same shards again. Picklable for spawn.
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
            batch = {k: _small_as_numpy(v) for k, v in batch.items()}
        return len(samples), verified, batch


_SMALL = 4096  # elements: below this a tensor rides inside the pickled message, not in its own shared memory


def _small_as_numpy(value: Any) -> Any:
    """Small CPU tensors cross the worker boundary as numpy (pickled inline, no shared-memory segment)."""
    if isinstance(value, torch.Tensor) and value.numel() < _SMALL and not value.is_shared():
        return _Inline(value.numpy())
    return value


class _Inline:
    """A small array that was a tensor in the worker; turned back into one in the main process."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _restore(value: Any) -> Any:
    return torch.from_numpy(value.array) if isinstance(value, _Inline) else value


class StreamLoader:
    """A DataLoader over one rank's stream, one epoch per ``iter()``, with an exact ``state_dict()``.

    Args:
        stream: the rank's `ShardStream` (its rank and world size are the trainer's).
        batch_size: samples per batch of this rank.
        num_workers: DataLoader worker processes; each reads whole batches.
        collate_fn: defaults to `collate` with ``flatten``/``ignore_index``/``compact``.
        compact: workers send only the ids (int32) and segment boundaries; `to_device` builds labels and
            positions on the device. Fastest when the trainer moves batches with `to_device`.
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
        compact: bool = False,
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
                if isinstance(batch, dict):
                    batch = {k: _restore(v) for k, v in batch.items()}
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


__all__ = ["IGNORE_INDEX", "StreamDataset", "StreamLoader", "collate", "to_device", "token_ids_int32"]
