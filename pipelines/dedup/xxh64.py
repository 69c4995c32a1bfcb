"""XXH64 of many byte ranges of one buffer at once, in numpy: the second reference for the compiled kernel.

MinHash shingles are the XXH64 digests of word n-grams (what datatrove's ``xxhash64`` returns for each n-gram
string). Here every n-gram of a batch is one ``[start, end)`` range of a single buffer and all ranges of one length
are hashed together, a few hundred numpy calls per batch. The signature path uses the compiled loop of
``kernels.py`` (several times faster: no whole-array passes); ``tests/pipelines/test_dedup_signatures.py`` checks
both against the ``xxhash`` package.
"""

from __future__ import annotations

import numpy as np

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_MASK32 = np.uint64(0xFFFFFFFF)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    acc = acc + lane * _P2
    return _rotl(acc, 31) * _P1


def _merge(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = h ^ _round(np.zeros_like(v), v)
    return h * _P1 + _P4


def little_endian_words(buffer: np.ndarray) -> np.ndarray:
    """For each byte offset p of `buffer` (uint8), the little-endian uint64 made of bytes p..p+7 (zero padded)."""
    padded = np.zeros(len(buffer) + 8, dtype=np.uint8)
    padded[: len(buffer)] = buffer
    return np.ndarray(shape=(len(buffer) + 1,), dtype="<u8", buffer=padded, strides=(1,)).astype(np.uint64)


def xxh64_ranges(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int = 0) -> np.ndarray:
    """XXH64 (seed `seed`) of ``buffer[starts[i]:ends[i]]`` for every i, as uint64."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    out = np.empty(len(starts), dtype=np.uint64)
    if not len(starts):
        return out
    words = little_endian_words(buffer)
    bytes_ = np.zeros(len(buffer) + 1, dtype=np.uint64)
    bytes_[: len(buffer)] = buffer
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    bounds = np.flatnonzero(np.diff(sorted_lengths)) + 1
    for group in np.split(order, bounds):
        length = int(lengths[group[0]])
        out[group] = _xxh64_fixed_length(words, bytes_, starts[group], length, seed)
    return out


def _xxh64_fixed_length(
    words: np.ndarray, bytes_: np.ndarray, starts: np.ndarray, length: int, seed: int
) -> np.ndarray:
    """XXH64 of ranges that all have the same `length`: the branch structure is the same for all of them."""
    with np.errstate(over="ignore"):
        seed64 = np.uint64(seed)
        pos = starts.copy()
        if length >= 32:
            v1 = np.full(len(pos), seed64 + _P1 + _P2, dtype=np.uint64)
            v2 = np.full(len(pos), seed64 + _P2, dtype=np.uint64)
            v3 = np.full(len(pos), seed64, dtype=np.uint64)
            v4 = np.full(len(pos), seed64 - _P1, dtype=np.uint64)
            for _ in range(length // 32):
                v1 = _round(v1, words[pos])
                v2 = _round(v2, words[pos + 8])
                v3 = _round(v3, words[pos + 16])
                v4 = _round(v4, words[pos + 24])
                pos += 32
            h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
            for v in (v1, v2, v3, v4):
                h = _merge(h, v)
        else:
            h = np.full(len(pos), seed64 + _P5, dtype=np.uint64)
        h = h + np.uint64(length)
        remaining = length % 32
        for _ in range(remaining // 8):
            h = h ^ _round(np.zeros_like(h), words[pos])
            h = _rotl(h, 27) * _P1 + _P4
            pos += 8
        if remaining % 8 >= 4:
            h = h ^ ((words[pos] & _MASK32) * _P1)
            h = _rotl(h, 23) * _P2 + _P3
            pos += 4
        for _ in range(remaining % 4):
            h = h ^ (bytes_[pos] * _P5)
            h = _rotl(h, 11) * _P1
            pos += 1
        h = h ^ (h >> np.uint64(33))
        h = h * _P2
        h = h ^ (h >> np.uint64(29))
        h = h * _P3
        return h ^ (h >> np.uint64(32))
