"""MinHash signatures and LSH band keys as arrays: plain functions, no Dask, no files.

The min-hashes are a compiled loop (``kernels.py``); ``signatures_numpy`` is the same in numpy passes.
The permutations are datatrove's (``MinhashDedupSignature.parameters``: the same seed, the same ``a * x + b`` with
uint64 wrap-around, then modulo the Mersenne prime 2^61 - 1), so signatures equal datatrove's bit for bit. The
modulo is done with the Mersenne identity ``x = hi * 2^61 + lo = hi + lo (mod p)`` instead of an integer division.

A band key is a 128-bit digest of one band's ``hashes_per_bucket`` values and the band's number. Two documents
share a key exactly when datatrove would find them in the same bucket with equal hashes, except with probability
about ``n^2 / 2^128`` per band (none in practice, even at 10^10 documents); 128 bits keep that true where 64 would
already give a few false pairs at billions of documents.
"""

from __future__ import annotations

import numpy as np

from pipelines.dedup.kernels import min_hashes

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_SHIFT61 = np.uint64(61)


def permutations(num_hashes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``a`` and ``b`` of each of the `num_hashes` hash permutations (datatrove's, same seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=num_hashes)
    b = gen.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=num_hashes)
    return a, b


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min-hash signatures, one row per document that has at least one shingle (in document order).

    `hashes` are the shingles of all documents, ``hashes[offsets[i]:offsets[i + 1]]`` those of document i.
    """
    return min_hashes(
        np.ascontiguousarray(hashes, dtype=np.uint64),
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(a, dtype=np.uint64),
        np.ascontiguousarray(b, dtype=np.uint64),
    )


def signatures_numpy(
    hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, rows_per_chunk: int = 2048
) -> np.ndarray:
    """``signatures`` in numpy passes over chunks of shingles: the reference the compiled kernel is tested with."""
    counts = np.diff(offsets)
    with_shingles = np.flatnonzero(counts)
    out = np.full((len(with_shingles), len(a)), np.iinfo(np.uint64).max, dtype=np.uint64)
    if not len(with_shingles):
        return out
    row_of_doc = np.full(len(counts), -1, dtype=np.int64)
    row_of_doc[with_shingles] = np.arange(len(with_shingles))
    doc_of_shingle = np.repeat(np.arange(len(counts)), counts)
    values = np.empty((rows_per_chunk, len(a)), dtype=np.uint64)
    folded = np.empty_like(values)
    with np.errstate(over="ignore"):
        for lo in range(0, len(hashes), rows_per_chunk):
            chunk = hashes[lo : lo + rows_per_chunk, None]
            v, f = values[: len(chunk)], folded[: len(chunk)]
            np.multiply(chunk, a, out=v)
            v += b
            np.bitwise_and(v, MERSENNE_PRIME, out=f)
            v >>= _SHIFT61
            f += v  # = (a * x + b) mod p, or that plus p (never more)
            if f.max() >= MERSENNE_PRIME:  # about once in 10^17 values: take off the p
                np.subtract(f, MERSENNE_PRIME, out=f, where=f >= MERSENNE_PRIME)
            docs = doc_of_shingle[lo : lo + rows_per_chunk]
            starts = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
            rows = row_of_doc[docs[starts]]
            out[rows] = np.minimum(out[rows], np.minimum.reduceat(f, starts, axis=0))
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def band_keys(sigs: np.ndarray, num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """128-bit keys (two uint64 arrays of shape (docs, num_buckets)) of each band of each signature."""
    bands = sigs.reshape(len(sigs), num_buckets, -1)
    band_ids = np.arange(num_buckets, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        k1 = _mix(band_ids + np.uint64(0x9E3779B97F4A7C15))
        k2 = _mix(band_ids + np.uint64(0xD1B54A32D192ED03))
        k1, k2 = np.broadcast_to(k1, bands.shape[:2]), np.broadcast_to(k2, bands.shape[:2])
        for j in range(bands.shape[2]):
            value = bands[:, :, j]
            k1 = _mix(k1 ^ value) * np.uint64(0xFF51AFD7ED558CCD)
            k2 = _mix(k2 + _mix(value ^ np.uint64(0xC4CEB9FE1A85EC53)))
    return _mix(k1), _mix(k2)


def node_ids(rank: int, doc_indices: np.ndarray) -> np.ndarray:
    """Graph node of a document: its rank in the high 32 bits, its index within the rank in the low 32."""
    return (np.uint64(rank) << np.uint64(32)) | np.asarray(doc_indices, dtype=np.uint64)


def partition_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """A well-spread partition number for node ids or keys."""
    with np.errstate(over="ignore"):
        return (_mix(np.asarray(values, dtype=np.uint64)) % np.uint64(partitions)).astype(np.int64)


def band_edges(k1: np.ndarray, k2: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Candidate pairs from band keys: every document sharing a key with a smaller one is linked to the smallest.

    Returns unique ``(node, smallest node of its key)`` rows, shape (edges, 2).
    """
    if not len(nodes):
        return np.empty((0, 2), dtype=np.uint64)
    order = np.lexsort((nodes, k2, k1))
    k1, k2, nodes = k1[order], k2[order], nodes[order]
    new_key = np.concatenate([[True], (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])])
    group_min = nodes[np.maximum.accumulate(np.where(new_key, np.arange(len(nodes)), 0))]
    linked = ~new_key
    return unique_pairs(np.stack([nodes[linked], group_min[linked]], axis=1))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Rows of a (n, 2) uint64 array without repeats, sorted."""
    if len(pairs) < 2:
        return pairs.reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    keep = np.concatenate([[True], (pairs[1:] != pairs[:-1]).any(axis=1)])
    return pairs[keep]
