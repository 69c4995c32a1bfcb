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
from packing.segments import cu_seqlens_from_lengths, position_ids_from_lengths
from packing.stream import ShardStream

IGNORE_INDEX = -100


def token_ids_int32(ids: np.ndarray) -> np.ndarray:
    """Token ids as int32 without a copy where possible (uint32 ids below 2**31 reinterpret as-is)."""
    if ids.dtype == np.uint32:
        return ids.view(np.int32)  # vocabularies stay far below 2**31; checked by the shard writer's dtype
    return ids.astype(np.int32)


def collate(
    samples: Sequence[dict[str, np.ndarray]],
    *,
    flatten: bool = False,
    ignore_index: int = IGNORE_INDEX,
    mask_document_starts: bool = True,
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

    Ids, labels and positions are int32, half the bytes of int64 to carry from a DataLoader worker;
    `to_device` widens them on the device.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(s["input_ids"]) for s in samples]
    if not flatten and len(set(lengths)) > 1:
        raise ValueError(
            f"samples of different lengths {sorted(set(lengths))} cannot stack; use flatten=True or batch_size=1"
        )
    ids = token_ids_int32(np.concatenate([s["input_ids"] for s in samples]))
    positions = np.concatenate(
        [position_ids_from_lengths(s["doc_lengths"], n) for s, n in zip(samples, lengths, strict=True)]
    )
    segment_lengths = []
    labels = ids.copy()
    row_start = 0
    for s, n in zip(samples, lengths, strict=True):
        doc_lengths = np.asarray(s["doc_lengths"], dtype=np.int64)
        used = 0 if s.get("is_padding", False) else int(doc_lengths.sum())
        labels[row_start + used : row_start + n] = ignore_index
        if mask_document_starts and len(doc_lengths):
            starts = np.cumsum(doc_lengths) - doc_lengths
            labels[row_start + starts[doc_lengths > 0]] = ignore_index
        segment_lengths.append(np.diff(cu_seqlens_from_lengths(doc_lengths, n)))
        row_start += n
    segments = np.concatenate(segment_lengths)
    cu = np.zeros(len(segments) + 1, dtype=np.int32)
    np.cumsum(segments, out=cu[1:])
    shape = (1, len(ids)) if flatten else (len(samples), lengths[0])
    batch: dict[str, torch.Tensor | int] = {
        "input_ids": torch.from_numpy(ids.reshape(shape)),
        "labels": torch.from_numpy(labels.reshape(shape)),
        "position_ids": torch.from_numpy(positions.reshape(shape)),
        "cu_seqlens": torch.from_numpy(cu),
        "max_seqlen": int(segments.max()),
    }
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
    return out


class StreamDataset(IterableDataset):
    """The samples of one rank from a fixed point, split across DataLoader workers in whole batches."""

    def __init__(self, stream: ShardStream, batch_size: int, *, epoch: int, start: int, skip: int) -> None:
        super().__init__()
        self.stream = stream
        self.batch_size = batch_size
        self.epoch, self.start, self.skip = epoch, start, skip

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
    """Collate in the worker, and say how many samples the batch holds (picklable for spawn)."""

    def __init__(self, collate_fn: Callable[[list[dict[str, np.ndarray]]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[dict[str, np.ndarray]]) -> tuple[int, Any]:
        return len(samples), self.collate_fn(samples)


class StreamLoader:
    """A DataLoader over one rank's stream, one epoch per ``iter()``, with an exact ``state_dict()``.

    Args:
        stream: the rank's `ShardStream` (its rank and world size are the trainer's).
        batch_size: samples per batch of this rank.
        num_workers: DataLoader worker processes; each reads whole batches.
        collate_fn: defaults to `collate` with ``flatten``/``ignore_index``.
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
        self.collate_fn = collate_fn or partial(collate, flatten=flatten, ignore_index=ignore_index)
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
            for count, batch in loader:
                stream.advance(count)
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
