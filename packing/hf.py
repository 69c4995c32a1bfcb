"""Hugging Face batches: the padding-free flattened format of transformers' flash-attention varlen path.

Why: ``transformers`` trains packed data without cross-document attention when a batch carries
``cu_seq_lens_q``/``cu_seq_lens_k`` (int32 boundaries) and ``max_length_q``/``max_length_k`` (Python ints),
the keys its ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` produces. This collator gives
the same batch from our rows directly: every document of every row is one sequence, the rows' padding
tails are left out, ``labels`` are the ids with ``-100`` at the first token of every document (the model
shifts them), ``position_ids`` restart at every document; all ``(1, total)``.

Samples that only pad a rank to an even share (``is_padding``) keep their tokens (every rank does the same
work) but get no label. With ``compact=True`` ids and positions stay int32 across the DataLoader worker
boundary (half the bytes); widen them on the device with `packing.torch.to_device`, since losses want int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from packing.torch import IGNORE_INDEX, token_ids_int32


class FlatteningCollator:
    """Collate packed rows into transformers' flattened flash-attention batch (see the module docstring)."""

    def __init__(
        self, *, separator_id: int = IGNORE_INDEX, return_seq_idx: bool = False, compact: bool = False
    ) -> None:
        self.separator_id = separator_id
        self.return_seq_idx = return_seq_idx
        self.compact = compact

    def __call__(self, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor | int]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        pieces, lengths, real = [], [], []
        for s in samples:
            doc_lengths = np.asarray(s["doc_lengths"], dtype=np.int64)
            doc_lengths = doc_lengths[doc_lengths > 0]
            used = int(doc_lengths.sum())
            pieces.append(token_ids_int32(np.asarray(s["input_ids"][:used])))
            lengths.append(doc_lengths)
            real.append(np.full(len(doc_lengths), not bool(s.get("is_padding", False))))
        ids = np.concatenate(pieces)
        n = np.concatenate(lengths)
        if not len(n):
            raise ValueError("the batch holds no tokens (every row is padding)")
        cu = np.zeros(len(n) + 1, dtype=np.int32)
        np.cumsum(n, out=cu[1:])
        starts = np.repeat(cu[:-1].astype(np.int64), n)
        labels = ids.copy()
        labels[cu[:-1]] = self.separator_id
        labels[~np.repeat(np.concatenate(real), n)] = self.separator_id
        positions = (np.arange(len(ids), dtype=np.int64) - starts).astype(np.int32)
        wide = (lambda a: a) if self.compact else (lambda a: a.astype(np.int64))
        batch: dict[str, torch.Tensor | int] = {
            "input_ids": torch.from_numpy(wide(ids)[None, :]),
            "labels": torch.from_numpy(wide(labels)[None, :]),
            "position_ids": torch.from_numpy(wide(positions)[None, :]),
            "cu_seq_lens_q": torch.from_numpy(cu),
            "cu_seq_lens_k": torch.from_numpy(cu.copy()),
            "max_length_q": int(n.max()),
            "max_length_k": int(n.max()),
        }
        if self.return_seq_idx:
            batch["seq_idx"] = torch.from_numpy(np.repeat(np.arange(len(n), dtype=np.int32), n)[None, :])
        return batch


__all__ = ["FlatteningCollator"]
