"""The two numeric hot loops of a MinHash signature, compiled with numba: XXH64 of word n-grams, and min-hashes.

Both were numpy passes (``xxh64.py`` groups byte ranges by length and hashes each group in a few dozen array
operations; ``minhash.signatures`` runs the 112 permutations over chunks of shingles). Each pass reads and writes
whole arrays, so the work is bound by memory traffic; one loop per n-gram and per shingle keeps everything in
registers and is several times faster. The numpy versions stay as the references the tests compare with (and
``xxhash`` and datatrove's ``get_signature`` are compared with both).

Compiled code is cached beside this file (``cache=True``), so a fresh Dask worker loads it instead of compiling.
Where neither that folder nor numba's per-user cache folder is writable, numba cannot cache: the kernels are then
compiled once per process (a few seconds) rather than failing.
"""

from __future__ import annotations

import numba
import numpy as np

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_MERSENNE = np.uint64((1 << 61) - 1)
_SPACE = 32


def _compiled(function):
    """``numba.njit`` with the on-disk cache where some cache folder is writable, without it elsewhere."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@_compiled
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@_compiled
def _read64(buffer, pos):
    value = np.uint64(0)
    for k in range(8):
        value |= np.uint64(buffer[pos + k]) << np.uint64(8 * k)
    return value


@_compiled
def _read32(buffer, pos):
    value = np.uint64(0)
    for k in range(4):
        value |= np.uint64(buffer[pos + k]) << np.uint64(8 * k)
    return value


@_compiled
def _round(acc, lane):
    acc = acc + lane * _P2
    return _rotl(acc, 31) * _P1


@_compiled
def _merge(h, v):
    h = h ^ _round(np.uint64(0), v)
    return h * _P1 + _P4


@_compiled
def _xxh64(buffer, start, length, seed):
    """XXH64 of ``buffer[start:start + length]`` (the reference algorithm, branch for branch)."""
    pos = start
    end = start + length
    if length >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        limit = end - 32
        while pos <= limit:
            v1 = _round(v1, _read64(buffer, pos))
            v2 = _round(v2, _read64(buffer, pos + 8))
            v3 = _round(v3, _read64(buffer, pos + 16))
            v4 = _round(v4, _read64(buffer, pos + 24))
            pos += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + _P5
    h += np.uint64(length)
    while pos + 8 <= end:
        h ^= _round(np.uint64(0), _read64(buffer, pos))
        h = _rotl(h, 27) * _P1 + _P4
        pos += 8
    if pos + 4 <= end:
        h ^= _read32(buffer, pos) * _P1
        h = _rotl(h, 23) * _P2 + _P3
        pos += 4
    while pos < end:
        h ^= np.uint64(buffer[pos]) * _P5
        h = _rotl(h, 11) * _P1
        pos += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@_compiled
def xxh64_ranges(buffer, starts, ends, seed):
    """XXH64 (seed `seed`, a uint64) of ``buffer[starts[i]:ends[i]]`` for every i."""
    out = np.empty(len(starts), dtype=np.uint64)
    for i in range(len(starts)):
        out[i] = _xxh64(buffer, starts[i], ends[i] - starts[i], seed)
    return out


@_compiled
def ngram_hashes(buffer, doc_starts, doc_ends, n):
    """XXH64 of every word n-gram of every document, and each document's offsets into them.

    Document i is ``buffer[doc_starts[i]:doc_ends[i]]``, its words separated by single spaces (no space at either
    end); an n-gram is its words joined by those spaces, as datatrove hashes them.
    """
    docs = len(doc_starts)
    offsets = np.zeros(docs + 1, dtype=np.int64)
    most_words = 0
    for i in range(docs):
        words = 0
        if doc_ends[i] > doc_starts[i]:
            words = 1
            for p in range(doc_starts[i], doc_ends[i]):
                if buffer[p] == _SPACE:
                    words += 1
        most_words = max(most_words, words)
        offsets[i + 1] = offsets[i] + max(words - n + 1, 0)
    hashes = np.empty(offsets[docs], dtype=np.uint64)
    word_starts = np.empty(most_words + 1, dtype=np.int64)  # and, at k + 1, the end of word k plus one
    for i in range(docs):
        if offsets[i + 1] == offsets[i]:
            continue
        words = 0
        word_starts[0] = doc_starts[i]
        for p in range(doc_starts[i], doc_ends[i]):
            if buffer[p] == _SPACE:
                words += 1
                word_starts[words] = p + 1
        word_starts[words + 1] = doc_ends[i] + 1
        out = offsets[i]
        for first in range(offsets[i + 1] - offsets[i]):
            start = word_starts[first]
            hashes[out + first] = _xxh64(buffer, start, word_starts[first + n] - 1 - start, np.uint64(0))
    return hashes, offsets


@_compiled
def min_hashes(hashes, offsets, a, b):
    """Min-hash signatures of the documents with at least one shingle, in document order.

    ``(a * x + b) mod (2^61 - 1)`` with uint64 wrap-around before the modulo, as datatrove computes it; the modulo
    by the Mersenne identity ``hi * 2^61 + lo = hi + lo``.
    """
    num = len(a)
    rows = 0
    for i in range(len(offsets) - 1):
        if offsets[i + 1] > offsets[i]:
            rows += 1
    out = np.empty((rows, num), dtype=np.uint64)
    row = 0
    for i in range(len(offsets) - 1):
        if offsets[i + 1] == offsets[i]:
            continue
        mins = out[row]
        mins[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for s in range(offsets[i], offsets[i + 1]):
            x = hashes[s]
            for j in range(num):
                v = a[j] * x + b[j]
                v = (v & _MERSENNE) + (v >> np.uint64(61))
                if v >= _MERSENNE:
                    v -= _MERSENNE
                if v < mins[j]:
                    mins[j] = v
        row += 1
    return out
