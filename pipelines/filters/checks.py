"""The rules of datatrove's quality filters on words computed once: plain functions returning the drop reason.

Each function takes the datatrove filter object whose parameters it applies (``f``) and returns the reason that
filter's ``filter`` method would return (None: keep), checking the rules in the same order. Words come in as
integer token ids of a ``WordSplitter``; per-word work is numpy on those ids, per-line work stays on the lines.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable

import numpy as np

from pipelines.filters.words import WordSplitter

_HASH_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)
# below this many words, datatrove's own n-gram functions on the word strings cost less than numpy's per-call
# overhead (they are the reference, so the short documents of a corpus need no proof)
SMALL_DOC_WORDS = 64


def duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's ``find_duplicates``: repeated elements and their characters, first occurrences excluded."""
    counts = Counter(items)
    return len(items) - len(counts), sum((c - 1) * len(s) for s, c in counts.items() if c > 1)


class NgramTable:
    """The n-grams of one word sequence, grouped word by word (tuple identity), for several n."""

    def __init__(self, words: np.ndarray, splitter: WordSplitter):
        self.words = words
        self.splitter = splitter
        _, self.local = np.unique(words, return_inverse=True)
        self.bits = max(1, int(self.local.max(initial=0)).bit_length())
        self.char_ends = np.concatenate(([0], np.cumsum(splitter.length[words])))

    def keys(self, n: int) -> np.ndarray:
        """One key per n-gram position, equal where the n-grams are equal word by word."""
        m = len(self.words) - n + 1
        local = self.local.astype(np.int64)
        if self.bits * n <= 63:
            key = np.zeros(m, np.int64)
            for j in range(n):
                key |= local[j : j + m] << (self.bits * j)
            return key
        windows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(local, n))
        return windows.view(np.dtype((np.void, 8 * n))).ravel()

    def classes(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each n-gram position: its group; for each group: first position and count."""
        _, first, inverse, counts = np.unique(
            self.keys(n), return_index=True, return_inverse=True, return_counts=True
        )
        return inverse.ravel(), first, counts

    def chars(self, n: int) -> np.ndarray:
        """Characters of each n-gram's words joined without a separator."""
        return self.char_ends[n:] - self.char_ends[: len(self.char_ends) - n]

    def joined_hashes(self, n: int) -> np.ndarray:
        """A hash of each n-gram's words joined without a separator: a function of the joined string (a
        polynomial over its code points, wrapping at 64 bits, plus its length), so equal strings hash equal."""
        m = len(self.words) - n + 1
        value, shift = self.splitter.hash[self.words], self.splitter.hash_shift[self.words]
        cached_n, joined = getattr(self, "_joined", (0, None))
        if cached_n == 0 or cached_n > n:
            cached_n, joined = 1, value.copy()
        while cached_n < n:  # extend each (cached_n)-gram by the next word
            joined = joined[:-1] * shift[cached_n:] + value[cached_n:]
            cached_n += 1
        self._joined = (n, joined)
        return joined[:m] + self.chars(n).astype(np.uint64) * _HASH_LENGTH_MIX


def top_ngram_chars(table: NgramTable, n: int) -> int:
    """datatrove's ``find_top_duplicate(get_n_grams(words, n))``: the most common n-gram's chars times its count.

    Ties go to the n-gram seen first, as ``Counter.most_common(1)`` does.
    """
    _, first, counts = np.unique(table.keys(n), return_index=True, return_counts=True)
    top = counts.max()
    start = int(first[counts == top].min())
    return (int(table.chars(n)[start]) + n - 1) * int(top)


def duplicated_ngram_chars(table: NgramTable, n: int, join_fix: bool = False) -> int | None:
    """datatrove's ``find_all_duplicate(words, n)``; None when its joined-string grouping cannot be proved equal.

    The scan is datatrove's: from the start, an n-gram seen before at a visited position counts and the scan jumps
    n words, otherwise it is remembered and the scan moves one word. Only repeated n-grams are visited one by
    one: a first occurrence is remembered whenever no earlier jump skipped it.
    """
    m = len(table.words) - n + 1
    if m <= 0:
        return 0
    joined_groups = len(np.unique(table.joined_hashes(n)))
    if joined_groups == m:  # all joined strings differ, so do the n-grams: nothing repeats
        return 0
    groups, first, _ = table.classes(n)
    if not join_fix and joined_groups != len(first):
        return None
    is_first = np.zeros(m, bool)
    is_first[first] = True
    repeats = np.flatnonzero(~is_first)
    if not len(repeats):
        return 0
    chars = table.chars(n)
    repeat_groups = groups[repeats]
    jumps: list[int] = []
    seen_again: set[int] = set()
    position = repeated = 0
    for r, group, first_at, length in zip(
        repeats.tolist(),
        repeat_groups.tolist(),
        first[repeat_groups].tolist(),
        chars[repeats].tolist(),
        strict=True,
    ):
        if r < position:
            continue
        if group not in seen_again:
            j = bisect_left(jumps, first_at) - 1
            if j >= 0 and first_at < jumps[j] + n:  # its first occurrence was jumped over: new here
                seen_again.add(group)
                position = r + 1
                continue
        repeated += length
        jumps.append(r)
        position = r + n
    return repeated


def gopher_repetition_reason(
    text: str, words: Callable[[], np.ndarray], splitter: WordSplitter, f, join_fix: bool = False
) -> str | None:
    """``GopherRepetitionFilter.filter``."""
    if not text:
        return "empty"
    paragraphs = f.paragraph_exp.split(text.strip())
    count, chars = duplicates(paragraphs)
    if f.dup_para_frac and count / len(paragraphs) > f.dup_para_frac:
        return "dup_para_frac"
    if f.dup_para_char_frac and chars / len(text) > f.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = f._line_splitter.split(text)
    count, chars = duplicates(lines)
    if f.dup_line_frac and count / len(lines) > f.dup_line_frac:
        return "dup_line_frac"
    if f.dup_line_char_frac and chars / len(text) > f.dup_line_char_frac:
        return "dup_line_char_frac"

    ids = words()
    if not join_fix and len(ids) <= SMALL_DOC_WORDS:
        return _small_doc_ngram_reason(text, [splitter.tokens[i] for i in ids.tolist()], f)
    table = NgramTable(ids, splitter)
    for n, n_frac in f.top_n_grams:
        if len(ids) < n:
            continue
        if top_ngram_chars(table, n) / len(text) > n_frac:
            return f"top_{n}_gram"
    for n, n_frac in f.dup_n_grams:
        repeated = duplicated_ngram_chars(table, n, join_fix)
        if repeated is None:
            from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

            repeated = find_all_duplicate([splitter.tokens[i] for i in ids.tolist()], n)
        if repeated / len(text) > n_frac:
            return f"duplicated_{n}_n_grams"
    return None


def _small_doc_ngram_reason(text: str, words: list[str], f) -> str | None:
    """The n-gram rules of ``GopherRepetitionFilter.filter`` with datatrove's own functions, for few words."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )

    for n, n_frac in f.top_n_grams:
        n_grams = get_n_grams(words, n)
        if n_grams and find_top_duplicate(n_grams) / len(text) > n_frac:
            return f"top_{n}_gram"
    for n, n_frac in f.dup_n_grams:
        if find_all_duplicate(words, n) / len(text) > n_frac:
            return f"duplicated_{n}_n_grams"
    return None


def gopher_quality_reason(
    text: str, ids: np.ndarray, splitter: WordSplitter, f, stop_ids: list[int]
) -> str | None:
    """``GopherQualityFilter.filter`` for a text with at least one word."""
    n_words = len(ids)
    non_symbol = splitter.non_symbol[ids]
    n_non_symbol = int(non_symbol.sum())
    if f.min_doc_words and n_non_symbol < f.min_doc_words:
        return "gopher_short_doc"
    if f.max_doc_words and n_non_symbol > f.max_doc_words:
        return "gopher_long_doc"
    avg = np.mean(splitter.length[ids[non_symbol]]) if n_non_symbol else float("nan")
    if f.min_avg_word_length and avg < f.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if f.max_avg_word_length and avg > f.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if f.max_symbol_word_ratio and text.count("#") / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if f.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if f.max_bullet_lines_ratio and (
        sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > f.max_bullet_lines_ratio
    ):
        return "gopher_too_many_bullets"
    if f.max_ellipsis_lines_ratio and (
        sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > f.max_ellipsis_lines_ratio
    ):
        return "gopher_too_many_end_ellipsis"
    if (
        f.max_non_alpha_words_ratio
        and int(splitter.has_alpha[ids].sum()) / n_words < f.max_non_alpha_words_ratio
    ):
        return "gopher_below_alpha_threshold"
    if f.min_stop_words and int(np.isin(stop_ids, ids).sum()) < f.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def c4_reason(text: str, splitter: WordSplitter, f, line_stats: Counter) -> tuple[str | None, str]:
    """``C4QualityFilter.filter`` with ``split_paragraph``: the reason and the text it leaves; counts line stats."""
    from datatrove.pipeline.filters.c4_filters import (
        CITATION_REGEX,
        ELLIPSIS,
        END_PUNCTUATION,
        POLICY_SUBSTRINGS,
    )

    kept: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        line = line.strip()
        words = line.split()
        if f.max_word_length != -1 and max(map(len, words), default=0) > f.max_word_length:
            line_stats["line-filter-too_long_word"] += 1
            continue
        if f.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            line_stats["line-filter-no_terminal_punc"] += 1
            continue
        if len(words) < f.min_words_per_line:
            line_stats["line-filter-too_few_words"] += 1
            continue
        line_l = line.lower()
        if f.filter_lorem_ipsum and "lorem ipsum" in line_l:
            line_stats["line-total"] += i + 1
            return "lorem_ipsum", text
        if f.filter_javascript and "javascript" in line_l:
            line_stats["line-filter-javascript"] += 1
            continue
        if f.filter_curly_bracket and "{" in line:
            line_stats["line-total"] += i + 1
            return "curly_bracket", text
        if f.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
            line_stats["line-filter-policy"] += 1
            continue
        kept.append(line)
        line_stats["line-kept"] += 1
    line_stats["line-total"] += len(lines)
    num_sentences = splitter.sentence_count(kept) if f.min_num_sentences != -1 and kept else 0
    if num_sentences < f.min_num_sentences:
        return "too_few_sentences", text
    return None, "\n".join(kept).strip()


def fineweb_reason(text: str, splitter: WordSplitter, f) -> str | None:
    """``FineWebQualityFilter.filter``."""
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return "empty"
    ratio = sum(1 for line in lines if line.endswith(f.stop_chars)) / len(lines)
    if ratio < f.line_punct_thr and not (ratio == 0 and f.line_punct_exclude_zero):
        return "line_punct_ratio"
    ratio = sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines)
    if ratio > f.short_line_threshold:
        return "short_line_ratio"
    if duplicates(lines)[1] / len(text.replace("\n", "")) > f.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / splitter.word_count(text) > f.new_line_ratio:
        return "list_ratio"
    return None
