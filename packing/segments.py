"""Document boundaries inside a packed row: cumulative lengths and per-document positions.

Why a room of its own: the stream, the torch collator and the Megatron and Hugging Face adapters all
turn ``doc_lengths`` into the same boundaries, and must agree on where the padding tail goes.
"""

from __future__ import annotations

import numpy as np


def segments(doc_lengths: np.ndarray, seq_len: int) -> np.ndarray:
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
    lengths = segments(doc_lengths, seq_len)
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return cu


def position_ids_from_lengths(doc_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """int32 positions restarting at 0 at every document (and at the padding tail)."""
    lengths = segments(doc_lengths, seq_len)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return (np.arange(seq_len, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)


__all__ = ["cu_seqlens_from_lengths", "position_ids_from_lengths", "segments"]
