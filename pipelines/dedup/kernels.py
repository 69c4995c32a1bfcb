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
def _words_in(buffer, start, end):
    """Words of ``buffer[start:end]``, words separated by single spaces (no space at either end)."""
    if end <= start:
        return 0
    words = 1
    for p in range(start, end):
        if buffer[p] == _SPACE:
            words += 1
    return words


@_compiled
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@_compiled
def _read_le(buffer, pos, count):
    """The little-endian unsigned integer of the `count` bytes at `pos`."""
    value = np.uint64(0)
    for k in range(count):
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
            v1 = _round(v1, _read_le(buffer, pos, 8))
            v2 = _round(v2, _read_le(buffer, pos + 8, 8))
            v3 = _round(v3, _read_le(buffer, pos + 16, 8))
            v4 = _round(v4, _read_le(buffer, pos + 24, 8))
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
        h ^= _round(np.uint64(0), _read_le(buffer, pos, 8))
        h = _rotl(h, 27) * _P1 + _P4
        pos += 8
    if pos + 4 <= end:
        h ^= _read_le(buffer, pos, 4) * _P1
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
        words = _words_in(buffer, doc_starts[i], doc_ends[i])
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


@_compiled
def simplify_ascii(buffer, starts, ends, raw, punctuation):
    """``simplify_text`` of ASCII texts in one pass: lowercase, every number ``[0-9]+([.,][0-9]+)?`` to "0",
    punctuation (``punctuation[byte]`` true) and whitespace runs to one space, none at either end.

    Text i is ``buffer[starts[i]:ends[i]]``; where ``raw[i]`` is false it is already simplified and copied as it
    is. Returns the simplified texts in one buffer and their bounds.
    """
    out = np.empty(len(buffer), dtype=np.uint8)
    out_starts = np.empty(len(starts), dtype=np.int64)
    out_ends = np.empty(len(starts), dtype=np.int64)
    o = 0
    for i in range(len(starts)):
        out_starts[i] = o
        if not raw[i]:
            for p in range(starts[i], ends[i]):
                out[o] = buffer[p]
                o += 1
            out_ends[i] = o
            continue
        first = o
        gap = False
        p, end = starts[i], ends[i]
        while p < end:
            c = buffer[p]
            if 48 <= c <= 57:
                p += 1
                while p < end and 48 <= buffer[p] <= 57:
                    p += 1
                if p + 1 < end and (buffer[p] == 46 or buffer[p] == 44) and 48 <= buffer[p + 1] <= 57:
                    p += 2
                    while p < end and 48 <= buffer[p] <= 57:
                        p += 1
                c = 48
            else:
                p += 1
                if punctuation[c] or c == 32 or 9 <= c <= 13:
                    gap = True
                    continue
                if 65 <= c <= 90:
                    c += 32
            if gap and o > first:
                out[o] = _SPACE
                o += 1
            gap = False
            out[o] = c
            o += 1
        out_ends[i] = o
    return out[:o], out_starts, out_ends


@_compiled
def _find_piece(slots, piece_hash, piece_start, piece_len, pool, buffer, start, length, h):
    """The slot of a piece in the open-addressing table, and its id there (-1 where it is not in the table)."""
    mask = len(slots) - 1
    i = np.int64(h & np.uint64(mask))
    while True:
        known = slots[i]
        if known < 0:
            return i, -1
        if piece_hash[known] == h and piece_len[known] == length:
            same = True
            at = piece_start[known]
            for k in range(length):
                if pool[at + k] != buffer[start + k]:
                    same = False
                    break
            if same:
                return i, known
        i = (i + 1) & mask


@_compiled
def split_pieces(buffer, starts, ends):
    """Every whitespace piece of every text (words separated by single spaces): its start, length and XXH64, and
    the offsets of each text's pieces."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    for i in range(len(starts)):
        offsets[i + 1] = offsets[i] + _words_in(buffer, starts[i], ends[i])
    total = offsets[len(starts)]
    at = np.empty(total, dtype=np.int64)
    lengths = np.empty(total, dtype=np.int64)
    hashes = np.empty(total, dtype=np.uint64)
    k = 0
    for i in range(len(starts)):
        if ends[i] == starts[i]:
            continue
        begin = starts[i]
        for p in range(starts[i], ends[i] + 1):
            if p == ends[i] or buffer[p] == _SPACE:
                at[k] = begin
                lengths[k] = p - begin
                hashes[k] = _xxh64(buffer, begin, p - begin, np.uint64(0))
                k += 1
                begin = p + 1
    return at, lengths, hashes, offsets


@_compiled
def find_pieces(buffer, at, lengths, hashes, slots, piece_hash, piece_start, piece_len, pool):
    """The table id of each piece ``buffer[at[k]:at[k] + lengths[k]]`` (-1 where it is not in the table)."""
    ids = np.empty(len(at), dtype=np.int64)
    for k in range(len(at)):
        ids[k] = _find_piece(slots, piece_hash, piece_start, piece_len, pool, buffer, at[k], lengths[k], hashes[k])[1]
    return ids


@_compiled
def insert_pieces(slots, piece_hash, first_id, count):
    """Put pieces ``first_id .. first_id + count - 1`` (distinct, not yet in the table) into their slots."""
    mask = len(slots) - 1
    for known in range(first_id, first_id + count):
        i = np.int64(piece_hash[known] & np.uint64(mask))
        while slots[i] >= 0:
            i = (i + 1) & mask
        slots[i] = known


@_compiled
def replace_pieces(buffer, at, lengths, ids, offsets, words_start, words_len, pool):
    """The texts again with every piece that splits replaced by its words (``pool[words_start[id]:...]``, joined
    by single spaces; ``words_start[id] < 0`` for a piece that is one word)."""
    size = 0
    for k in range(len(at)):
        known = ids[k]
        size += (words_len[known] if words_start[known] >= 0 else lengths[k]) + 1
    out = np.empty(size, dtype=np.uint8)
    out_starts = np.empty(len(offsets) - 1, dtype=np.int64)
    out_ends = np.empty(len(offsets) - 1, dtype=np.int64)
    o = 0
    for i in range(len(offsets) - 1):
        out_starts[i] = o
        for k in range(offsets[i], offsets[i + 1]):
            if k > offsets[i]:
                out[o] = _SPACE
                o += 1
            known = ids[k]
            if words_start[known] >= 0:
                for q in range(words_len[known]):
                    out[o + q] = pool[words_start[known] + q]
                o += words_len[known]
            else:
                for q in range(lengths[k]):
                    out[o + q] = buffer[at[k] + q]
                o += lengths[k]
        out_ends[i] = o
    return out[:o], out_starts, out_ends


@_compiled
def punctuation_to_spaces(points, punctuation, whitespace):
    """Code points with punctuation and whitespace runs made one space, none at either end (``whitespace`` is 1
    at every code point ``str.split`` splits at)."""
    out = np.empty(len(points), dtype=np.uint32)
    o = 0
    gap = False
    for cp in points:
        if punctuation[cp] or whitespace[cp] == 1:
            gap = True
            continue
        if gap and o:
            out[o] = _SPACE
            o += 1
        gap = False
        out[o] = cp
        o += 1
    return out[:o]


@_compiled
def marks_dropped_utf8(points, marks, whitespace):
    """UTF-8 of code points without those of ``marks`` (1), whitespace runs made one space, none at either end;
    and False where a surrogate code point makes UTF-8 impossible."""
    out = np.empty(4 * len(points), dtype=np.uint8)
    o = 0
    gap = False
    for cp in points:
        if marks[cp] == 1:
            continue
        if whitespace[cp] == 1:
            gap = True
            continue
        if 0xD800 <= cp <= 0xDFFF:
            return out[:0], False
        if gap and o:
            out[o] = _SPACE
            o += 1
        gap = False
        if cp < 0x80:
            out[o] = cp
            o += 1
        elif cp < 0x800:
            out[o] = 0xC0 | (cp >> 6)
            out[o + 1] = 0x80 | (cp & 0x3F)
            o += 2
        elif cp < 0x10000:
            out[o] = 0xE0 | (cp >> 12)
            out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
            out[o + 2] = 0x80 | (cp & 0x3F)
            o += 3
        else:
            out[o] = 0xF0 | (cp >> 18)
            out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
            out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
            out[o + 3] = 0x80 | (cp & 0x3F)
            o += 4
    return out[:o], True
