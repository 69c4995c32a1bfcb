"""The aggregation tasks: common words (cwe) and frequent coded words (fwe)."""

from __future__ import annotations

import string

import numpy as np

from longctx.assemble import AssemblyError
from longctx.drafts import (
    BuildContext,
    Draft,
    generated_units,
    largest_fitting,
    probe_tokens_per_unit,
    split_template,
)
from longctx.haystack import TokenizedUnits, tokenize_units
from longctx.tasks import CWE_ANSWER, CWE_TEMPLATE, FWE_ANSWER, FWE_TEMPLATE, TaskSpec
from longctx.words import ENGLISH_WORDS_HINT, Draws, common_word_pool, english_words


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
    if ctx.placement.exact_lists:
        return _whole_cwe(ctx, example + "\n" + prefix, suffix, target, rng, num_cw, freq_cw, freq_ucw, per)
    return Draft.numbered(
        example + "\n" + prefix,
        suffix,
        CWE_ANSWER,
        units,
        list(common),
        provenance={"source": "words", "kind": "wonderwords"},
        check=check,
    )


def _ruler_cwe_words(ctx: BuildContext, seed: int, n: int) -> list[str] | None:
    """RULER's choice of `n` words: a sample of wonderwords, or of the English list when wonderwords is too
    small (None when that list is needed and was not given). The sample is the first `n` of one seeded
    shuffle, so that a longer list holds the words of a shorter one (the search over `n` stays monotone)."""
    pool = common_word_pool()
    if n > len(pool):
        if not ctx.cwe_words:
            return None
        pool = english_words(ctx.cwe_words)
        if n > len(pool):
            raise AssemblyError(f"cwe needs {n} distinct words; the English word list holds {len(pool)}")
    return [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:n]]


def _whole_cwe(
    ctx: BuildContext,
    prefix: str,
    suffix: str,
    target: int,
    rng: np.random.Generator,
    num_cw: int,
    freq_cw: int,
    freq_ucw: int,
    per_item: float,
) -> Draft:
    """RULER's cwe list, never cut: the common words exactly `freq_cw` times, the others exactly `freq_ucw`
    times, with as many words as fit."""
    measure = ctx.measure(prefix, suffix, CWE_ANSWER)
    words_seed, order_seed = (int(x) for x in rng.integers(0, 2**63, size=2))
    lists: dict[int, tuple[list[str], np.ndarray, str]] = {}

    def build(n: int) -> tuple[list[str], np.ndarray, str] | None:
        if n not in lists:
            words = _ruler_cwe_words(ctx, words_seed, n)
            if words is None:
                return None
            repeats = np.full(n, freq_ucw, dtype=np.int64)
            repeats[:num_cw] = freq_cw
            items = np.random.default_rng(order_seed).permutation(np.repeat(np.arange(n), repeats))
            text = " ".join(f"{i}. {words[w]}" for i, w in enumerate(items.tolist(), start=1))
            lists[n] = (words, items, text)
        return lists[n]

    def count(n: int) -> int:
        built = build(n)
        assert built is not None  # n is within the words there are (the limit below)
        return measure(built[2])

    fixed = measure("")
    guess = num_cw + int(((target - fixed) / per_item - num_cw * freq_cw) / freq_ucw)
    wonderwords = len(common_word_pool())
    limit = len(english_words(ctx.cwe_words)) if ctx.cwe_words else wonderwords
    n = largest_fitting(count, max(num_cw + 1, guess), target, per_item * freq_ucw, limit=limit)
    if n == wonderwords and not ctx.cwe_words and count(n) + per_item * freq_ucw <= target:
        raise AssemblyError(
            f"cwe at this length needs more than wonderwords' {n} words, as RULER does: pass --cwe-words with "
            + ENGLISH_WORDS_HINT
        )
    words, items, _ = lists[n]
    texts = [f"{i}. {words[w]}" for i, w in enumerate(items.tolist(), start=1)]
    units = tokenize_units(ctx.tok, texts, " ")
    source = "english words" if n > len(common_word_pool()) else "wonderwords"
    return Draft.numbered(
        prefix,
        suffix,
        CWE_ANSWER,
        units,
        list(words[:num_cw]),
        provenance={"source": "words", "kind": source, "words": n, "freq_cw": freq_cw, "freq_ucw": freq_ucw},
        extra={"word_counts": {"common": freq_cw, "uncommon": freq_ucw, "words": n}},
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
    prefix, suffix = split_template(FWE_TEMPLATE)
    if ctx.placement.exact_lists:
        return _whole_fwe(ctx, prefix, suffix, target, rng, vocab, units, weights, mean_tokens)
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


def _whole_fwe(
    ctx: BuildContext,
    prefix: str,
    suffix: str,
    target: int,
    rng: np.random.Generator,
    vocab: list[str],
    units: TokenizedUnits,
    weights: np.ndarray,
    mean_tokens: float,
) -> Draft:
    """RULER's coded text, never cut: word k exactly floor(num_words * k^-alpha / zeta(alpha)) times, with the
    largest `num_words` that fits."""
    measure = ctx.measure(prefix, suffix, FWE_ANSWER)
    order_seed = int(rng.integers(0, 2**63))
    seqs: dict[int, np.ndarray] = {}

    def sequence(n: int) -> np.ndarray:
        if n not in seqs:
            counts = (n * weights).astype(np.int64)
            seq = np.repeat(np.arange(len(vocab), dtype=np.int64), counts)
            seqs[n] = np.random.default_rng(order_seed).permutation(seq)
        return seqs[n]

    def count(n: int) -> int:
        return measure(" ".join(vocab[i] for i in sequence(n).tolist()))

    fixed = measure("")
    n = largest_fitting(count, int((target - fixed) / mean_tokens), target, mean_tokens)
    return Draft(
        prefix,
        suffix,
        FWE_ANSWER,
        units,
        sequence(n),
        vocab[1:4],
        provenance={"source": "coded words", "vocab_size": len(vocab), "num_words": n},
    )
