"""The aggregation tasks: common words (cwe) and frequent coded words (fwe)."""

from __future__ import annotations

import string

import numpy as np

from longctx.assemble import AssemblyError
from longctx.drafts import BuildContext, Draft, generated_units, probe_tokens_per_unit, split_template
from longctx.haystack import tokenize_units
from longctx.tasks import CWE_ANSWER, CWE_TEMPLATE, FWE_ANSWER, FWE_TEMPLATE, TaskSpec
from longctx.words import Draws, common_word_pool


def _cwe_words(rng: np.random.Generator, n: int) -> list[str]:
    pool = list(common_word_pool())
    if n <= len(pool):
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    # More words than RULER's list holds (RULER then falls back to a large English word list that is not
    # available offline): the whole list, then distinct adjective-noun words.
    words = [pool[i] for i in rng.permutation(len(pool))]
    seen = set(words)
    draws = Draws(rng)
    while len(words) < n:
        for w in draws.words(n - len(words)):
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words


def _cwe_list(
    rng: np.random.Generator, num_words: int, freq_cw: int, freq_ucw: int, num_cw: int
) -> tuple[list[str], np.ndarray]:
    """RULER's word list: the first `num_cw` words `freq_cw` times, the others `freq_ucw` times, shuffled.

    Returns the words and, for each list item in order, the index of its word (the common ones are 0..num_cw-1).
    """
    words = _cwe_words(rng, num_words)
    repeats = np.full(len(words), freq_ucw, dtype=np.int64)
    repeats[:num_cw] = freq_cw
    return words, rng.permutation(np.repeat(np.arange(len(words), dtype=np.int64), repeats))


def draft_cwe(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator
) -> Draft:
    a = spec.args
    num_cw = a["num_cw"]
    small = target + spec.max_new_tokens < 4096
    freq_cw, freq_ucw = (6, 1) if small else (a["freq_cw"], a["freq_ucw"])
    ex_words, ex_items = _cwe_list(rng, 20, 3, 1, num_cw) if small else _cwe_list(rng, 40, 10, 3, num_cw)
    ex_common = ex_words[:num_cw]
    ex_ctx = " ".join(f"{i + 1}. {ex_words[w]}" for i, w in enumerate(ex_items.tolist()))
    example = (
        CWE_TEMPLATE.format(context=ex_ctx)
        + CWE_ANSWER
        + " "
        + " ".join(f"{i + 1}. {w}" for i, w in enumerate(ex_common))
    )
    # Probe with numbers and words like the list's: numbers of its size, overflow words in their share.
    est_items = max(64, target // 5)
    est_words = num_cw + est_items // freq_ucw
    pool = common_word_pool()
    overflow = max(0.0, 1.0 - len(pool) / est_words)
    probe_words = [pool[i] for i in rng.integers(0, len(pool), size=64 - int(64 * overflow))]
    probe_words += Draws(rng).words(64 - len(probe_words))
    per = probe_tokens_per_unit(ctx, [f"{est_items // 2 + i}. {w}" for i, w in enumerate(probe_words)], " ")

    def make(n_items: int) -> tuple[list[str], tuple]:
        num_words = num_cw + max(1, -(-(n_items - num_cw * freq_cw) // freq_ucw))
        words, items = _cwe_list(rng, num_words, freq_cw, freq_ucw, num_cw)
        return [f"{i}. {words[w]}" for i, w in enumerate(items.tolist(), start=1)], (words, items)

    units, (words, items) = generated_units(ctx, make, " ", target, per)
    common = words[:num_cw]

    def check(used: np.ndarray) -> list[str]:
        tally = np.bincount(items[used], minlength=len(words))
        if tally[:num_cw].min() <= tally[num_cw:].max(initial=0):
            raise AssemblyError("the cut left a common word no more frequent than an uncommon one")
        return common

    prefix, suffix = split_template(CWE_TEMPLATE)
    return Draft(
        example + "\n" + prefix,
        suffix,
        CWE_ANSWER,
        units,
        np.arange(len(units), dtype=np.int64),
        list(common),
        provenance={"source": "words", "kind": "wonderwords"},
        check=check,
        reorderable=False,
    )


def _zeta(alpha: float, terms: int = 1_000_000) -> float:
    """Riemann zeta by direct sum plus the integral tail (scipy is not a dependency)."""
    k = np.arange(1, terms + 1, dtype=np.float64)
    return float(np.sum(k**-alpha) + terms ** (1 - alpha) / (alpha - 1))


def draft_fwe(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator
) -> Draft:
    a = spec.args
    alpha, wordlen = float(a["alpha"]), int(a["coded_wordlen"])
    vocab_size = max(8, target // 50)
    letters = np.array(list(string.ascii_lowercase))
    vocab: list[str] = []
    seen: set[str] = set()
    while len(vocab) < vocab_size:
        for w in ("".join(r) for r in letters[rng.integers(0, 26, size=(vocab_size, wordlen))]):
            if w not in seen and len(vocab) < vocab_size:
                seen.add(w)
                vocab.append(w)
    vocab = sorted(vocab)
    vocab = [vocab[i] for i in rng.permutation(len(vocab))]
    vocab[0] = "..."  # RULER treats the top-ranked word as noise
    units = tokenize_units(ctx.tok, vocab, " ", form="before")
    z = _zeta(alpha)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -alpha / z
    mean_tokens = float((units.counts * weights).sum() / weights.sum())
    num_words = int(target / mean_tokens * 1.05) + 64
    while True:
        counts = (num_words * weights).astype(np.int64)
        seq = rng.permutation(np.repeat(np.arange(vocab_size, dtype=np.int64), counts))
        if int(units.counts[seq].sum()) > target + 8:
            break
        num_words = int(num_words * 1.2)

    def check(used: np.ndarray) -> list[str]:
        tally = np.bincount(seq[used], minlength=vocab_size)
        top = np.argsort(-tally[1:], kind="stable")[:4] + 1
        if sorted(top[:3].tolist()) != [1, 2, 3] or tally[top[2]] <= tally[top[3]]:
            raise AssemblyError("the cut changed the three most frequent coded words")
        return vocab[1:4]

    prefix, suffix = split_template(FWE_TEMPLATE)
    return Draft(
        prefix,
        suffix,
        FWE_ANSWER,
        units,
        seq,
        vocab[1:4],
        provenance={"source": "coded words", "vocab_size": vocab_size},
        check=check,
    )
