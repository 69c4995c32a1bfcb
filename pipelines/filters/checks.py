"""The rules of datatrove's quality filters on words computed once: plain functions returning the drop reason.

Each function takes the datatrove filter object whose parameters it applies (``f``) and returns the reason that
filter's ``filter`` method would return (None: keep), checking the rules in the same order. Words come in as
integer token ids of a ``WordSplitter``; per-word work is numpy on those ids, per-line work stays on the lines.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter

import numpy as np
import pandas as pd

from pipelines.filters.words import WordSplitter, range_positions

_HASH_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)
_DOC_MIX = np.uint64(0xD1B54A32D192ED03)


def duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's ``find_duplicates``: repeated elements and their characters, first occurrences excluded (all
    elements' characters less those of the distinct ones)."""
    distinct = set(items)
    repeated = len(items) - len(distinct)
    if not repeated:
        return 0, 0
    return repeated, sum(map(len, items)) - sum(map(len, distinct))


# datatrove's paragraph and line patterns, and what a text must hold for them to split it
_BREAKS = {r"\n{2,}": "\n\n", "\n+": "\n"}


def _split(pattern: re.Pattern, text: str) -> list[str]:
    needs = _BREAKS.get(pattern.pattern)
    if needs is not None and needs not in text:
        return [text]
    return pattern.split(text)


class JoinedHashes:
    """For each position of a word sequence, the polynomial hash of its n words joined without a separator (a
    function of the joined string alone), extended one word at a time from the last n asked for."""

    def __init__(self, words: np.ndarray, splitter: WordSplitter):
        self.value, self.shift = splitter.hash[words], splitter.hash_shift[words]
        self.n, self.joined = 1, self.value

    def of(self, n: int) -> np.ndarray:
        if self.n > n:
            self.n, self.joined = 1, self.value
        with np.errstate(over="ignore"):
            while self.n < n:  # hash(a + b) = hash(a) * BASE^len(b) + hash(b)
                self.joined = self.joined[:-1] * self.shift[self.n :] + self.value[self.n :]
                self.n += 1
        return self.joined


class NgramTable:
    """The n-grams of one word sequence, grouped word by word (tuple identity), for several n."""

    def __init__(self, words: np.ndarray, splitter: WordSplitter):
        self.words = words
        self.splitter = splitter
        _, self.local = np.unique(words, return_inverse=True)
        self.bits = max(1, int(self.local.max(initial=0)).bit_length())
        self.char_ends = np.concatenate(([0], np.cumsum(splitter.length[words])))
        self._joined = JoinedHashes(words, splitter)

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
        with np.errstate(over="ignore"):
            return self._joined.of(n) + self.chars(n).astype(np.uint64) * _HASH_LENGTH_MIX


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


def paragraph_and_line_reason(text: str, f) -> str | None:
    """The rules of ``GopherRepetitionFilter.filter`` that come before words."""
    if not text:
        return "empty"
    paragraphs = _split(f.paragraph_exp, text.strip())
    count, chars = duplicates(paragraphs)
    if f.dup_para_frac and count / len(paragraphs) > f.dup_para_frac:
        return "dup_para_frac"
    if f.dup_para_char_frac and chars / len(text) > f.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _split(f._line_splitter, text)
    count, chars = duplicates(lines)
    if f.dup_line_frac and count / len(lines) > f.dup_line_frac:
        return "dup_line_frac"
    if f.dup_line_char_frac and chars / len(text) > f.dup_line_char_frac:
        return "dup_line_char_frac"
    return None


class BatchNgrams:
    """The word n-grams of a batch of documents (word ids ``ids[offsets[i]:offsets[i + 1]]``), all at once.

    An n-gram is keyed by a dense rank of (document, its words): ranks are built n by n from the (n-1)-gram rank
    and the next word, so equal ranks mean the same words in the same document. Ranks are numbered in the order
    n-grams first appear, so a document's ranks come after the previous document's. Positions whose n words run
    into the next document get a rank of their own.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, splitter: WordSplitter):
        self.ids, self.offsets, self.splitter = ids, offsets, splitter
        counts = np.diff(offsets)
        self.doc = np.repeat(np.arange(len(counts)), counts)
        self.doc_end = offsets[1:][self.doc]  # each word's document's end
        self.char_ends = np.concatenate(([0], np.cumsum(splitter.length[ids])))
        self.vocabulary = int(ids.max(initial=0)) + 1
        self._rank_n, self._rank = 0, None
        self._joined = JoinedHashes(ids, splitter)

    def valid(self, n: int) -> np.ndarray:
        """Positions whose n words lie in one document."""
        m = max(len(self.ids) - n + 1, 0)
        return np.arange(m) + n <= self.doc_end[:m]

    def ranks(self, n: int) -> np.ndarray:
        """The n-gram rank of every position (positions that cross a document: unique negative ranks)."""
        if self._rank_n == 0 or self._rank_n > n:
            self._rank_n, self._rank = 1, dense_ranks(self.doc * self.vocabulary + self.ids)
        while self._rank_n < n:
            k = self._rank_n + 1
            m = len(self.ids) - k + 1
            combined = self._rank[:m] * self.vocabulary + self.ids[k - 1 :]
            valid = self.valid(k)
            combined[~valid] = -1 - np.flatnonzero(~valid)
            self._rank_n, self._rank = k, dense_ranks(combined)
            self._rank[~valid] = -1 - np.flatnonzero(~valid)
        return self._rank

    def top_chars(self, n: int) -> np.ndarray:
        """Per document, datatrove's ``find_top_duplicate(get_n_grams(words, n))`` (-1: fewer than n words):
        the most common n-gram's characters (words joined by spaces) times its count; ties go to the first seen."""
        result = np.full(len(self.offsets) - 1, -1, np.int64)
        ranks = self.ranks(n)
        valid = np.flatnonzero(ranks >= 0)
        if not len(valid):
            return result
        # ranks are dense and ordered by document, so the groups of one document are contiguous
        groups = ranks[valid]
        counts = np.bincount(groups)
        first = np.full(len(counts), len(self.ids), np.int64)
        np.minimum.at(first, groups, valid)
        present = np.flatnonzero(counts)
        counts, first = counts[present], first[present]
        group_doc = self.doc[first]
        docs, starts = np.unique(group_doc, return_index=True)
        top = np.maximum.reduceat(counts, starts)
        at_top = counts == np.repeat(top, np.diff(np.append(starts, len(counts))))
        earliest = np.minimum.reduceat(np.where(at_top, first, len(self.ids)), starts)
        chars = self.char_ends[earliest + n] - self.char_ends[earliest] + n - 1
        result[docs] = chars * top
        return result

    def repeat_bound(self, n: int) -> np.ndarray:
        """Per document, at least what datatrove's ``find_all_duplicate(words, n)`` can return.

        The scan counts an n-gram (words joined without a separator) seen before at a visited position, then jumps
        past its n words: the counted n-grams cover disjoint words, all of them inside n-grams that occur earlier in
        the document. So the characters of the words that such repeated n-grams cover bound the count. Joined
        n-grams are grouped by a hash of the joined string: equal strings hash equal, and a collision can only
        merge groups, which raises the bound.
        """
        bound = np.zeros(len(self.offsets) - 1, np.int64)
        valid = np.flatnonzero(self.valid(n))
        if not len(valid):
            return bound
        m = len(self.ids) - n + 1
        joined = self._joined.of(n)
        with np.errstate(over="ignore"):
            chars = (self.char_ends[n:] - self.char_ends[:m]).astype(np.uint64)
            keyed = (joined + chars * _HASH_LENGTH_MIX)[valid]
            keyed ^= self.doc[valid].astype(np.uint64) * _DOC_MIX
        again = valid[~first_occurrences(keyed)]
        if len(again):
            cover = np.zeros(len(self.ids) + 1, np.int64)
            np.add.at(cover, again, 1)
            np.add.at(cover, again + n, -1)
            covered = np.cumsum(cover[:-1]) > 0
            bound += np.bincount(
                self.doc, weights=np.where(covered, self.splitter.length[self.ids], 0), minlength=len(bound)
            ).astype(np.int64)
        return bound


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """For each position: is it the first with its key? (one pass through a hash table, no sort)"""
    return ~pd.Series(keys, copy=False).duplicated(keep="first").to_numpy()


def dense_ranks(keys: np.ndarray) -> np.ndarray:
    """A number per distinct key, 0, 1, 2... in the order keys first appear (one hash pass, no sort)."""
    return pd.factorize(keys)[0].astype(np.int64, copy=False)


def gopher_repetition_reasons(
    texts: list[str], ids: np.ndarray, offsets: np.ndarray, splitter: WordSplitter, f, join_fix: bool = False
) -> list[str | None]:
    """``GopherRepetitionFilter.filter``'s reason for each of a batch of texts (words: ``WordSplitter.batch_words``).

    The n-gram rules run on the whole batch at once; datatrove's duplicated n-gram scan runs only on documents
    where some n-gram may repeat.
    """
    reasons = [paragraph_and_line_reason(text, f) for text in texts]
    pending = np.array([r is None for r in reasons])
    if not pending.any():
        return reasons
    lengths = np.fromiter(map(len, texts), np.float64, len(texts))
    lengths[lengths == 0] = np.inf  # empty texts were decided above
    ngrams = _PendingNgrams(ids, offsets, splitter, pending)
    for n, n_frac in f.top_n_grams:
        failing = pending & (ngrams.per_document(BatchNgrams.top_chars, n) / lengths > n_frac)
        for i in np.flatnonzero(failing).tolist():
            reasons[i] = f"top_{n}_gram"
        pending &= ~failing
        if not pending.any():
            return reasons
    ngrams = _PendingNgrams(ids, offsets, splitter, pending)
    tables: dict[int, NgramTable] = {}
    for n, n_frac in f.dup_n_grams:
        bound = ngrams.per_document(BatchNgrams.repeat_bound, n)
        for i in np.flatnonzero(pending & (bound / lengths > n_frac)).tolist():
            if i not in tables:
                tables[i] = NgramTable(ids[offsets[i] : offsets[i + 1]], splitter)
            if duplicated_chars(tables[i], n, join_fix) / len(texts[i]) > n_frac:
                reasons[i] = f"duplicated_{n}_n_grams"
                pending[i] = False
    return reasons


class _PendingNgrams:
    """``BatchNgrams`` of the pending documents of a batch only, answering per document of the whole batch."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, splitter: WordSplitter, pending: np.ndarray):
        self.docs = np.flatnonzero(pending)
        counts = np.diff(offsets)[self.docs]
        self.size = len(offsets) - 1
        positions = range_positions(offsets[:-1][self.docs], counts)
        self.ngrams = BatchNgrams(ids[positions], np.concatenate(([0], np.cumsum(counts))), splitter)

    def per_document(self, method, n: int) -> np.ndarray:
        """``method(ngrams, n)`` for every document of the batch (0 for those not pending)."""
        result = np.zeros(self.size, np.int64)
        result[self.docs] = method(self.ngrams, n)
        return result


def duplicated_chars(table: NgramTable, n: int, join_fix: bool = False) -> int:
    """datatrove's ``find_all_duplicate`` for one document (its own function where ours cannot tell)."""
    repeated = duplicated_ngram_chars(table, n, join_fix)
    if repeated is None:
        from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

        repeated = find_all_duplicate([table.splitter.tokens[i] for i in table.words.tolist()], n)
    return repeated


def gopher_quality_reasons(
    texts: list[str], ids: np.ndarray, offsets: np.ndarray, splitter: WordSplitter, f, stop_ids: np.ndarray
) -> list[str | None]:
    """``GopherQualityFilter.filter``'s reason for each of a batch of texts that each have at least one word.

    The per-word counts are sums over the batch's word ids, one numpy call each.
    """
    counts = np.diff(offsets)
    doc = np.repeat(np.arange(len(texts)), counts)
    non_symbol = splitter.non_symbol[ids]
    n_non_symbol = np.bincount(doc, weights=non_symbol, minlength=len(texts)).astype(np.int64)
    chars = np.bincount(doc, weights=np.where(non_symbol, splitter.length[ids], 0), minlength=len(texts))
    with np.errstate(invalid="ignore", divide="ignore"):
        averages = (chars / n_non_symbol).tolist()  # nan without non-symbol words, as numpy's mean of nothing
    alpha = np.bincount(doc, weights=splitter.has_alpha[ids], minlength=len(texts)).astype(np.int64)
    is_stop = np.isin(ids, stop_ids)
    stop_pairs = np.unique(doc[is_stop] * (int(ids.max(initial=0)) + 1) + ids[is_stop])
    stops = np.bincount(stop_pairs // (int(ids.max(initial=0)) + 1), minlength=len(texts))
    return [
        _gopher_quality_reason(text, int(n), int(ns), avg, int(a), int(st), f)
        for text, n, ns, avg, a, st in zip(
            texts, counts.tolist(), n_non_symbol.tolist(), averages, alpha.tolist(), stops.tolist(), strict=True
        )
    ]


def _gopher_quality_reason(
    text: str, n_words: int, n_non_symbol: int, avg: float, n_alpha: int, n_stop: int, f
) -> str | None:
    """``GopherQualityFilter.filter`` on one text's word counts, its rules in datatrove's order."""
    if f.min_doc_words and n_non_symbol < f.min_doc_words:
        return "gopher_short_doc"
    if f.max_doc_words and n_non_symbol > f.max_doc_words:
        return "gopher_long_doc"
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
    if f.max_non_alpha_words_ratio and n_alpha / n_words < f.max_non_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if f.min_stop_words and n_stop < f.min_stop_words:
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
