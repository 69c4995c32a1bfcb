"""Megatron-Core batches straight from our shards: packed THD micro-batches with their PackedSeqParams.

Why not only the ``.bin``/``.idx`` export: Megatron's GPTDataset re-packs documents and cuts them at
sample boundaries; this adapter keeps our packing and hands Megatron what its ``get_batch`` expects for the
packed (THD) format, with every document its own attention segment:

- ``tokens``, ``labels`` (the next token inside the same document), ``loss_mask`` (float, 0 at the last
  token of every document, at padding and on samples that only pad a rank to an even share),
  ``position_ids`` (restarting at every document): all ``(1, T)``, the documents of the micro-batch's rows
  laid end to end without the rows' padding tails;
- ``cu_seqlens`` (real document lengths) and ``cu_seqlens_padded`` (each document padded to a multiple of
  ``2 * cp_size`` for context parallelism, the layout of the tokens), int32, and ``max_seqlen`` (a 1-element
  int32 tensor): exactly what ``megatron.core.utils.get_thd_batch_on_this_cp_rank`` turns into
  ``PackedSeqParams(qkv_format="thd", ...)``, or `packed_seq_params` here;
- ``seq_idx`` ``(1, T)`` int32: the document index of every token, what Mamba layers take for packed input.

By default `megatron_loader`'s workers send only the int32 tokens and the boundaries (compact), and
`packing.torch.to_device` builds the other per-token tensors and widens the ids on the GPU. This module
imports megatron-core only inside `packed_seq_params`, so the data path runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from packing.stream import ShardStream
from packing.torch import CompactBatch, StreamLoader, batch_segments, concatenate_ids, int32_buffer

MEGATRON_KEYS = (
    "tokens",
    "labels",
    "loss_mask",
    "position_ids",
    "cu_seqlens",
    "cu_seqlens_padded",
    "max_seqlen",
)


def cp_padded_lengths(lengths: np.ndarray, cp_size: int) -> np.ndarray:
    """Each length rounded up to a multiple of ``2 * cp_size`` (no rounding without context parallelism).

    Megatron's context parallelism splits every sequence into ``2 * cp_size`` chunks (load balancing for
    causal attention), so each document must divide evenly.
    """
    if cp_size < 1:
        raise ValueError(f"cp_size must be >= 1, got {cp_size}")
    multiple = 2 * cp_size if cp_size > 1 else 1
    return -(-np.asarray(lengths, dtype=np.int64) // multiple) * multiple


class MegatronCompactBatch(CompactBatch):
    """A ``megatron_collate(compact=True)`` batch: tokens and boundaries; `to_device` builds the rest."""

    derived = ("labels", "loss_mask", "position_ids", "seq_idx")

    @staticmethod
    def expand_on_device(batch: dict[str, Any]) -> None:
        """Labels, loss mask, positions and ``seq_idx`` with torch ops on the batch's device.

        The same keys, dtypes and values as ``to_device(megatron_collate(..., compact=False))``.
        """
        tokens = batch["tokens"]
        total = tokens.shape[1]
        pad_id = batch.pop("pad_id")
        has_loss = batch.pop("document_has_loss")
        cu = batch["cu_seqlens"].long()
        cu_padded = batch["cu_seqlens_padded"].long()
        padded = cu_padded[1:] - cu_padded[:-1]
        document = torch.repeat_interleave(
            torch.arange(len(padded), device=tokens.device), padded, output_size=total
        )
        within = torch.arange(total, device=tokens.device) - cu_padded[:-1][document]
        has_next = within < (cu[1:] - cu[:-1] - 1)[document]  # the last token of a document predicts nothing
        flat = tokens.reshape(-1)
        batch["labels"] = flat.roll(-1).masked_fill(~has_next, pad_id).view(1, total)
        batch["loss_mask"] = (has_next & has_loss[document]).float().view(1, total)
        batch["position_ids"] = within.view(1, total)
        batch["seq_idx"] = document.to(torch.int32).view(1, total)


def megatron_collate(
    samples: Sequence[dict[str, np.ndarray]], *, cp_size: int = 1, pad_id: int = 0, compact: bool = False
) -> dict[str, Any]:
    """One THD micro-batch from packed rows: every document a segment, padded for context parallelism.

    ``compact=True`` (`megatron_loader`'s default) makes only the tokens and the boundaries (4 bytes a
    token instead of 20 across the DataLoader worker boundary); `packing.torch.to_device` builds labels,
    loss mask, positions and ``seq_idx`` on the device, exactly those of ``compact=False``.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    seg, is_doc, has_loss = batch_segments(samples)
    n = seg[is_doc]  # the rows' padding tails are left out
    if not len(n):
        raise ValueError("the micro-batch holds no tokens (every row is padding)")
    real = has_loss[is_doc]
    p = cp_padded_lengths(n, cp_size)
    cu = np.zeros(len(n) + 1, dtype=np.int64)
    np.cumsum(n, out=cu[1:])
    cu_padded = np.zeros(len(p) + 1, dtype=np.int64)
    np.cumsum(p, out=cu_padded[1:])
    total, used = int(cu_padded[-1]), int(cu[-1])

    # the per-token tensors share one storage (sent once from a DataLoader worker)
    buffer = int32_buffer(total if compact else 5 * total)
    tokens = buffer[:total].numpy()
    # without padding for context parallelism the tensors are built in place, else in the documents' own
    # coordinates and then scattered to the padded layout
    unpadded = total == used
    ids = tokens if unpadded else np.empty(used, dtype=np.int32)
    # documents start every row and follow each other: the used part of each row, laid end to end
    concatenate_ids([np.asarray(s["input_ids"][: int(np.sum(s["doc_lengths"]))]) for s in samples], out=ids)
    dest = None if unpadded else np.arange(used, dtype=np.int64) + np.repeat(cu_padded[:-1] - cu[:-1], n)
    if dest is not None:
        tokens.fill(pad_id)
        tokens[dest] = ids
    batch: dict[str, Any] = {
        "tokens": buffer[:total].view(1, total),
        "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        "cu_seqlens_padded": torch.from_numpy(cu_padded.astype(np.int32)),
        "max_seqlen": torch.tensor([int(p.max())], dtype=torch.int32),
        "is_padding": torch.tensor([bool(s.get("is_padding", False)) for s in samples]),
    }
    for key in ("source_id", "sample_id"):
        if key in samples[0]:
            batch[key] = torch.tensor([int(s[key]) for s in samples], dtype=torch.int64)
    if compact:
        batch |= {"document_has_loss": torch.from_numpy(real), "pad_id": pad_id}
        return MegatronCompactBatch(batch)

    labels, position_ids, segment = (buffer[i * total : (i + 1) * total].numpy() for i in range(1, 4))
    loss_mask = buffer[4 * total :].view(torch.float32).numpy()
    next_token = labels if unpadded else np.empty(used, dtype=np.int32)
    loss = loss_mask if unpadded else np.empty(used, dtype=np.float32)
    # the next token inside the same document; nothing to predict after a document's last token
    last = cu[1:] - 1
    next_token[:-1] = ids[1:]
    next_token[last] = pad_id
    loss.fill(1.0)
    loss[last] = 0.0
    if not real.all():
        loss[~np.repeat(real, n)] = 0.0
    if dest is not None:
        for out, values, fill in ((labels, next_token, pad_id), (loss_mask, loss, 0)):
            out.fill(fill)
            out[dest] = values
    segment[:] = np.repeat(np.arange(len(p), dtype=np.int32), p)
    np.subtract(
        np.arange(total, dtype=np.int32), np.repeat(cu_padded[:-1].astype(np.int32), p), out=position_ids
    )

    def row(i: int) -> torch.Tensor:
        return buffer[i * total : (i + 1) * total].view(1, total)

    return batch | {
        "labels": row(1),
        "loss_mask": row(4).view(torch.float32),
        "position_ids": row(2),
        "seq_idx": row(3),
    }


class MegatronCollate:
    """`megatron_collate` with fixed options, picklable for DataLoader workers."""

    def __init__(self, *, cp_size: int = 1, pad_id: int = 0, compact: bool = False) -> None:
        cp_padded_lengths(np.zeros(0), cp_size)  # validates cp_size
        self.cp_size = cp_size
        self.pad_id = pad_id
        self.compact = compact

    def __call__(self, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
        return megatron_collate(samples, cp_size=self.cp_size, pad_id=self.pad_id, compact=self.compact)


def megatron_loader(
    stream: ShardStream,
    rows_per_micro_batch: int = 1,
    *,
    cp_size: int = 1,
    num_workers: int = 2,
    pad_id: int | None = None,
    compact: bool = True,
    **loader_kwargs: Any,
) -> StreamLoader:
    """A resumable loader of Megatron THD micro-batches over one data-parallel rank's stream.

    Pass the data-parallel rank and size to the `ShardStream` (every tensor- and pipeline-parallel rank
    of one data-parallel group reads the same stream). ``state_dict()`` goes into the checkpoint;
    ``pad_id`` defaults to the index's ``pad_id``. ``compact`` (default): workers send tokens and
    boundaries only, and `packing.torch.to_device` builds labels, loss mask, positions and ``seq_idx`` on
    the device (see `megatron_collate`).
    """
    if pad_id is None:
        pad_id = int(stream.sources[0].index["tokenizer"].get("pad_id") or 0)
    return StreamLoader(
        stream,
        batch_size=rows_per_micro_batch,
        num_workers=num_workers,
        collate_fn=MegatronCollate(cp_size=cp_size, pad_id=pad_id, compact=compact),
        **loader_kwargs,
    )


def packed_seq_params(batch: dict[str, torch.Tensor]) -> Any:
    """Megatron-Core's ``PackedSeqParams`` for a batch of `megatron_collate` (needs megatron-core)."""
    from megatron.core.packed_seq_params import PackedSeqParams

    max_seqlen = int(batch["max_seqlen"][0])
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=batch["cu_seqlens"],
        cu_seqlens_kv=batch["cu_seqlens"],
        cu_seqlens_q_padded=batch["cu_seqlens_padded"],
        cu_seqlens_kv_padded=batch["cu_seqlens_padded"],
        max_seqlen_q=max_seqlen,
        max_seqlen_kv=max_seqlen,
    )


__all__ = [
    "MEGATRON_KEYS",
    "MegatronCollate",
    "MegatronCompactBatch",
    "cp_padded_lengths",
    "megatron_collate",
    "megatron_loader",
    "packed_seq_params",
]
