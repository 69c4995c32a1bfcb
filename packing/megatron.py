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

Ids travel int32 from the DataLoader workers; `packing.torch.to_device` widens them on the GPU. This module
imports megatron-core only inside `packed_seq_params`, so the data path runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from packing.stream import ShardStream
from packing.torch import StreamLoader, batch_segments, int32_buffer

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


def megatron_collate(
    samples: Sequence[dict[str, np.ndarray]], *, cp_size: int = 1, pad_id: int = 0
) -> dict[str, torch.Tensor]:
    """One THD micro-batch from packed rows: every document a segment, padded for context parallelism."""
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

    # the five per-token tensors share one storage (sent once from a DataLoader worker)
    buffer = int32_buffer(5 * total)
    tokens, labels, position_ids, segment = (buffer[i * total : (i + 1) * total].numpy() for i in range(4))
    loss_mask = buffer[4 * total :].view(torch.float32).numpy()
    # without padding for context parallelism the tensors are built in place, else in the documents' own
    # coordinates and then scattered to the padded layout
    unpadded = total == used
    ids = tokens if unpadded else np.empty(used, dtype=np.int32)
    next_token = labels if unpadded else np.empty(used, dtype=np.int32)
    loss = loss_mask if unpadded else np.empty(used, dtype=np.float32)
    # documents start every row and follow each other: the used part of each row, laid end to end
    rows = [np.asarray(s["input_ids"][: int(np.sum(s["doc_lengths"]))]) for s in samples]
    if all(r.dtype == np.uint32 for r in rows):
        np.concatenate(rows, out=ids.view(np.uint32))
    else:
        np.concatenate(rows, out=ids, casting="unsafe")
    # the next token inside the same document; nothing to predict after a document's last token
    last = cu[1:] - 1
    next_token[:-1] = ids[1:]
    next_token[last] = pad_id
    loss.fill(1.0)
    loss[last] = 0.0
    if not real.all():
        loss[~np.repeat(real, n)] = 0.0
    if not unpadded:
        dest = np.arange(used, dtype=np.int64) + np.repeat(cu_padded[:-1] - cu[:-1], n)
        for out, values, fill in ((tokens, ids, pad_id), (labels, next_token, pad_id), (loss_mask, loss, 0)):
            out.fill(fill)
            out[dest] = values
    segment[:] = np.repeat(np.arange(len(p), dtype=np.int32), p)
    np.subtract(
        np.arange(total, dtype=np.int32), np.repeat(cu_padded[:-1].astype(np.int32), p), out=position_ids
    )

    def row(i: int) -> torch.Tensor:
        return buffer[i * total : (i + 1) * total].view(1, total)

    batch = {
        "tokens": row(0),
        "labels": row(1),
        "loss_mask": row(4).view(torch.float32),
        "position_ids": row(2),
        "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        "cu_seqlens_padded": torch.from_numpy(cu_padded.astype(np.int32)),
        "max_seqlen": torch.tensor([int(p.max())], dtype=torch.int32),
        "seq_idx": row(3),
        "is_padding": torch.tensor([bool(s.get("is_padding", False)) for s in samples]),
    }
    for key in ("source_id", "sample_id"):
        if key in samples[0]:
            batch[key] = torch.tensor([int(s[key]) for s in samples], dtype=torch.int64)
    return batch


class MegatronCollate:
    """`megatron_collate` with fixed options, picklable for DataLoader workers."""

    def __init__(self, *, cp_size: int = 1, pad_id: int = 0) -> None:
        cp_padded_lengths(np.zeros(0), cp_size)  # validates cp_size
        self.cp_size = cp_size
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return megatron_collate(samples, cp_size=self.cp_size, pad_id=self.pad_id)


def megatron_loader(
    stream: ShardStream,
    rows_per_micro_batch: int = 1,
    *,
    cp_size: int = 1,
    num_workers: int = 2,
    pad_id: int | None = None,
    **loader_kwargs: Any,
) -> StreamLoader:
    """A resumable loader of Megatron THD micro-batches over one data-parallel rank's stream.

    Pass the data-parallel rank and size to the `ShardStream` (every tensor- and pipeline-parallel rank
    of one data-parallel group reads the same stream). ``state_dict()`` goes into the checkpoint;
    ``pad_id`` defaults to the index's ``pad_id``.
    """
    if pad_id is None:
        pad_id = int(stream.sources[0].index["tokenizer"].get("pad_id") or 0)
    return StreamLoader(
        stream,
        batch_size=rows_per_micro_batch,
        num_workers=num_workers,
        collate_fn=MegatronCollate(cp_size=cp_size, pad_id=pad_id),
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
    "cp_padded_lengths",
    "megatron_collate",
    "megatron_loader",
    "packed_seq_params",
]
