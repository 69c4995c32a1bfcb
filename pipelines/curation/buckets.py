"""Percentile buckets from per-rank score histograms: the array work of the quality step, without Dask.

Scores are probabilities. Each rank counts its scores into a fixed histogram over the logit of the score (so that
the many scores crowded near 0 or 1 still spread over many bins); the histograms of all ranks are summed (integer
counts: the same edges whatever the number of ranks or workers) and the bucket edges are the bins where the
cumulative count crosses k/N of the corpus. A document's bucket is the number of edges below its bin, so the
bucket never decreases as the score grows.
"""

from __future__ import annotations

import numpy as np

LOGIT_LIMIT = 18.0  # logits beyond +-18 (p within 1.5e-8 of 0 or 1) share the end bins


def score_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """The histogram bin (0..bins-1) of each probability, monotone in the score."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    logit = np.clip(np.log(p) - np.log1p(-p), -LOGIT_LIMIT, LOGIT_LIMIT)
    index = np.floor((logit + LOGIT_LIMIT) / (2 * LOGIT_LIMIT) * bins).astype(np.int64)
    return np.minimum(index, bins - 1)


def histogram(scores: np.ndarray, bins: int) -> np.ndarray:
    """int64 counts of the scores per bin."""
    return np.bincount(score_bins(scores, bins), minlength=bins).astype(np.int64)


def bucket_edges(counts: np.ndarray, buckets: int) -> np.ndarray:
    """The last bin of buckets 0..N-2: bin e_k is the first whose cumulative count reaches k/N of the total."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(buckets - 1, dtype=np.int64)
    cumulative = np.cumsum(counts)
    # integer targets: ceil(k * total / N), exact for any corpus size
    targets = -(-np.arange(1, buckets, dtype=np.int64) * total // buckets)
    return np.searchsorted(cumulative, targets, side="left").astype(np.int64)


def assign_buckets(scores: np.ndarray, edges: np.ndarray, bins: int) -> np.ndarray:
    """Bucket of each score: how many edges lie strictly below its bin."""
    return np.searchsorted(edges, score_bins(scores, bins), side="left").astype(np.int64)


def ensemble_buckets(
    scores: np.ndarray, weights: np.ndarray, counts: np.ndarray, buckets: int, combine: str
) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble score, bucket) of documents scored by C classifiers (`scores` is D x C).

    `counts` holds C + 1 merged histograms: the weighted mean first, then each classifier. ``mean`` buckets the
    weighted mean by its percentiles; ``max`` buckets each classifier by its own and takes the highest.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    weights = np.asarray(weights, dtype=np.float64)
    bins = counts.shape[1]
    mean = scores @ (weights / weights.sum())
    if combine == "mean":
        return mean, assign_buckets(mean, bucket_edges(counts[0], buckets), bins)
    per = [assign_buckets(scores[:, i], bucket_edges(counts[i + 1], buckets), bins) for i in range(scores.shape[1])]
    return mean, np.max(np.stack(per, axis=1), axis=1)


def rank_histograms(scores: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    """The C + 1 histograms one rank contributes: the weighted mean, then each classifier's scores."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64)).reshape(-1, len(weights))
    mean = scores @ (np.asarray(weights, dtype=np.float64) / np.sum(weights))
    return np.stack([histogram(mean, bins), *[histogram(scores[:, i], bins) for i in range(scores.shape[1])]])
