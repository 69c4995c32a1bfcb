"""Words exactly as datatrove's ``split_into_words`` gives them, computed once per distinct chunk of text.

datatrove splits words with spaCy's tokenizer on the whole document (inside a memory zone, so nothing it learns is
kept) and again for every filter. spaCy itself works chunk by chunk: it cuts the text at whitespace and tokenizes
each non-whitespace chunk on its own (that is what its internal cache is keyed on). So the words of a text are the
tokens of its chunks, in order, once whitespace tokens are dropped, which datatrove does.

The one thing that crosses a chunk boundary is spaCy's special-case matcher: a multi-token special case whose
tokens straddle two chunks separated by a single space can win over an overlapping special case inside one chunk.
A text where two adjacent chunks could start such a match (the last token of one and the first of the next are
consecutive tokens of some multi-token special case) is split by datatrove's own function instead, as are texts
containing "IS_ALPHA" (datatrove's spaCy error path) and languages whose word tokenizer is not a plain spaCy one.

Each distinct chunk is tokenized once (many chunks at a time, separated by newlines) and its tokens are kept as
integer ids in one flat array (chunk i owns ``flat[bounds[i]:bounds[i + 1]]``); per-token properties the filters need
live in numpy arrays indexed by id, computed for many new tokens at once from their code points. The words of a
batch of texts are then one dictionary lookup per chunk and a numpy gather (``batch_words``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import chain, islice, repeat

import numpy as np
from spacy.attrs import IDX, IS_PUNCT, LENGTH

from pipelines.codepoints import CodePointClass, code_points, punctuation_set_mask
from pipelines.filters.affixes import (
    AffixShapes,
    guarded_infix_finditer,
    guarded_prefix_search,
    tail_suffix_search,
)

_WS_SPLIT = re.compile(r"(\s+)")
# the sentencizer's rule on token classes: P = a sentence-final punctuation character, O = other punctuation,
# N = anything else; a sentence starts at every N token preceded, since the last N token, by a P token
_SENTENCE_START = re.compile(r"P[PO]*N")
_MASK = (1 << 64) - 1
_HASH_BASE = 0x100000001B3  # odd: a polynomial hash over code points, wrapping at 64 bits


class WordSplitter:
    """Token ids of texts, equal to datatrove's ``split_into_words`` (see the module docstring)."""

    def __init__(self, language: str = "en", max_chunks: int = 1_000_000):
        from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

        self.language = language
        self.max_chunks = max_chunks
        reference = load_word_tokenizer(language)
        self.fast = type(reference) is SpaCyTokenizer and reference.config is None
        self.slow_texts = 0  # texts split by datatrove's own function
        if self.fast:
            self._nlp = self._private_nlp()
            self._punct_chars = set(self._nlp.get_pipe("sentencizer").punct_chars)
            self._patterns = self._special_case_patterns()
            self._boundary_pairs = {pair for p in self._patterns for pair in zip(p, p[1:], strict=False)}
            self._pattern_lengths = sorted({len(p) for p in self._patterns})
            self._pair_lefts = {left for left, _ in self._boundary_pairs}
            self._pair_rights = {right for _, right in self._boundary_pairs}
            self._special_keys = set(self._nlp.tokenizer.rules)
            self._shapes: AffixShapes | None = None
        self._reset()

    # -- vocabulary --------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.generation = getattr(self, "generation", -1) + 1  # token ids from an older generation are stale
        if self.fast and self.generation:
            self._nlp = self._private_nlp()  # drops the lexemes spaCy learnt meanwhile
        self._chunk_index: dict[str, int] = {}  # chunk -> its row in the flat token table
        self._chunk_bounds = np.zeros(1025, np.int64)  # chunk i's tokens: _chunk_flat[bounds[i]:bounds[i + 1]]
        self._chunk_flat = np.zeros(4096, np.int64)
        self._n_chunks = 0
        self._chunk_codes: dict[str, str] = {"": ""}  # sentencizer classes of a chunk's tokens, when asked
        self._token_codes: dict[int, str] = {}
        self._token_id: dict[str, int] = {}
        self._pair_keys_generation = -1  # (left token id << 32 | right token id) of the special-case pairs
        self._pattern_ids_generation = -1  # the multi-token special cases as tuples of token ids
        self.tokens: list[str] = []
        self._size = 0
        cap = 1024
        self.length = np.zeros(cap, np.int64)
        self.non_symbol = np.zeros(cap, bool)
        self.has_alpha = np.zeros(cap, bool)
        self.hash = np.zeros(cap, np.uint64)
        self.hash_shift = np.zeros(cap, np.uint64)
        self.pair_left = np.zeros(cap, bool)  # the token is the left one of two consecutive special-case tokens
        self.pair_right = np.zeros(cap, bool)  # ... the right one

    def _grow(self, need: int) -> None:
        cap = len(self.length)
        while cap < need:
            cap *= 2
        for name in ("length", "non_symbol", "has_alpha", "hash", "hash_shift", "pair_left", "pair_right"):
            setattr(self, name, _grown(getattr(self, name), cap))

    def token_ids(self, tokens: list[str]) -> list[int]:
        """Ids of token strings, adding the new ones to the vocabulary."""
        return self.token_array(tokens).tolist()

    def token_array(self, tokens: list[str]) -> np.ndarray:
        """Ids of token strings as an int64 array, adding the new ones to the vocabulary."""
        new = set(tokens).difference(self._token_id)
        if new:
            self._add_tokens(sorted(new))
        return np.fromiter(map(self._token_id.__getitem__, tokens), np.int64, len(tokens))

    def _add_tokens(self, new: list[str]) -> None:
        """Give new tokens ids and compute their properties, all at once from their code points."""
        start, count = self._size, len(new)
        if start + count > len(self.length):
            self._grow(start + count)
        self._token_id.update(zip(new, range(start, start + count), strict=True))
        self.tokens += new
        self._size += count
        sl = slice(start, self._size)
        lengths = np.fromiter(map(len, new), np.int64, count)
        self.length[sl] = lengths
        self.hash_shift[sl] = _powers(int(lengths.max()))[lengths]
        if self.fast:
            self.pair_left[sl] = np.fromiter(map(self._pair_lefts.__contains__, new), bool, count)
            self.pair_right[sl] = np.fromiter(map(self._pair_rights.__contains__, new), bool, count)
        filled = np.flatnonzero(lengths)  # an empty token (never from spaCy) has no symbol, letter or hash
        self.non_symbol[sl] = self.has_alpha[sl] = False
        self.hash[sl] = 0
        if not len(filled):
            return
        nonempty = lengths[filled]
        points = code_points("".join(new))
        firsts = np.concatenate(([0], np.cumsum(nonempty)[:-1]))
        rows = filled + start
        self.non_symbol[rows] = np.logical_or.reduceat(~punctuation_set_mask()[points], firsts)
        self.has_alpha[rows] = np.logical_or.reduceat(_ALPHA.mask(points), firsts)
        # the polynomial hash of each token: sum of code point * BASE^(characters after it), wrapping at 64 bits
        after = np.repeat(firsts + nonempty, nonempty) - 1 - np.arange(len(points))
        weighted = points.astype(np.uint64) * _powers(int(nonempty.max()))[after]
        self.hash[rows] = np.add.reduceat(weighted, firsts)

    def _code(self, token_id: int) -> str:
        """A token's sentencizer class (see _SENTENCE_START), computed when first asked."""
        code = self._token_codes.get(token_id)
        if code is None:
            token = self.tokens[token_id]
            code = "P" if token in self._punct_chars else "O" if self._is_punct(token) else "N"
            self._token_codes[token_id] = code
        return code

    def _private_nlp(self):
        """datatrove's spaCy pipeline, our own copy: used outside memory zones, its vocabulary grows until a reset.

        Its lexemes carry no attributes: the tokenizer's splits depend on its affix rules, special cases and URL
        and token matchers only, never on lexeme attributes, so the tokens are the same and new words cost less.
        """
        from datatrove.utils.word_tokenizers import SpaCyTokenizer
        from spacy.tokenizer import Tokenizer

        nlp = SpaCyTokenizer(self.language).tokenizer
        self._is_punct = nlp.vocab.lex_attr_getters[IS_PUNCT]
        nlp.vocab.lex_attr_getters = {}
        # the same tokenizer with the same affix searches, answered faster (see pipelines/filters/affixes.py); built
        # anew rather than set one by one, since each setter reloads every special case
        old = nlp.tokenizer
        nlp.tokenizer = Tokenizer(
            nlp.vocab,
            rules=old.rules,
            prefix_search=guarded_prefix_search(old.prefix_search),
            suffix_search=tail_suffix_search(old.suffix_search),
            infix_finditer=guarded_infix_finditer(old.infix_finditer),
            token_match=old.token_match,
            url_match=old.url_match,
            faster_heuristics=old.faster_heuristics,
        )
        return nlp

    def _special_case_patterns(self) -> set[tuple[str, ...]]:
        """The multi-token special cases as spaCy's matcher looks for them (their affix split, no specials)."""
        from spacy.tokenizer import Tokenizer

        tok = self._nlp.tokenizer
        plain = Tokenizer(
            self._nlp.vocab,
            rules={},
            prefix_search=tok.prefix_search,
            suffix_search=tok.suffix_search,
            infix_finditer=tok.infix_finditer,
            token_match=tok.token_match,
            url_match=tok.url_match,
        )
        patterns = set()
        for key in tok.rules:
            parts = tuple(t.text for t in plain(key))
            if len(parts) > 1:
                if any(not p.strip() for p in parts):
                    raise RuntimeError(
                        f"spaCy special case {key!r} has a whitespace token; fast split unproven"
                    )
                patterns.add(parts)
        return patterns

    # -- chunks ------------------------------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> None:
        """Tokenize, in one spaCy call per few thousand, every chunk of these texts not seen before."""
        if self.fast:
            self._learn(set(chain.from_iterable(map(str.split, texts))))

    def _learn(self, chunks: set[str]) -> None:
        if self._n_chunks > self.max_chunks or len(self._nlp.vocab) > 2 * self.max_chunks:
            self._reset()
        missing = sorted(chunks.difference(self._chunk_index))
        for start in range(0, len(missing), 4096):
            self._tokenize_chunks(missing[start : start + 4096])

    def _tokenize_chunks(self, chunks: list[str]) -> None:
        simple, split, split_parts, rest = self._split_simple(chunks)
        self._store(simple, [[c] for c in simple], checked=True)
        self._store(split, split_parts, checked=True)
        if not rest:
            return
        joined = "\n".join(rest)
        try:
            spans = self._nlp.tokenizer(joined).to_array([IDX, LENGTH]).tolist()
        except Exception:  # one odd chunk: do them one by one
            for chunk in rest:
                try:
                    self._store([chunk], [[t.text for t in self._nlp.tokenizer(chunk)]])
                except Exception:
                    continue  # never cached: texts holding it take the whole-text path
            return
        per_chunk: list[list[str]] = [[]]
        for start, length in spans:
            if joined[start] == "\n":
                per_chunk.append([])
            else:
                per_chunk[-1].append(joined[start : start + length])
        if len(per_chunk) != len(rest):
            raise RuntimeError("chunk separators were not kept apart by spaCy's tokenizer")
        self._store(rest, per_chunk)

    def _split_simple(self, chunks: list[str]) -> tuple[list[str], list[str], list[list[str]], list[str]]:
        """Chunks spaCy keeps whole; chunks whose tokens follow from a few affix shapes, with their tokens; and
        the others (for spaCy). See ``AffixShapes``."""
        tokenizer = self._nlp.tokenizer
        if self._shapes is None or self._shapes.tokenizer is not tokenizer:
            self._shapes = AffixShapes(tokenizer, self._special_keys, self._patterns, self._boundary_pairs)
        return self._shapes.split(chunks)

    def _store(self, chunks: list[str], parts: list[list[str]], checked: bool = False) -> None:
        """Append chunks and their tokens to the flat table (``checked``: the parts are known to join up)."""
        if not checked:  # an unexpected split is never cached: the texts holding the chunk take the whole-text path
            kept = [(c, p) for c, p in zip(chunks, parts, strict=True) if p and "".join(p) == c]
            chunks, parts = [c for c, _ in kept], [p for _, p in kept]
        if not chunks:
            return
        ids = self.token_array(list(chain.from_iterable(parts)))
        counts = np.fromiter(map(len, parts), np.int64, len(parts))
        first, last = self._n_chunks, self._n_chunks + len(chunks)
        flat_start = int(self._chunk_bounds[first])
        flat_end = flat_start + len(ids)
        self._chunk_bounds = _grown(self._chunk_bounds, last + 1)
        self._chunk_flat = _grown(self._chunk_flat, flat_end)
        self._chunk_bounds[first + 1 : last + 1] = flat_start + np.cumsum(counts)
        self._chunk_flat[flat_start:flat_end] = ids
        self._chunk_index.update(zip(chunks, range(first, last), strict=True))
        self._n_chunks = last

    def _ids_of(self, chunk: str) -> list[int]:
        row = self._chunk_index[chunk]
        return self._chunk_flat[self._chunk_bounds[row] : self._chunk_bounds[row + 1]].tolist()

    def _codes_of(self, chunk: str) -> str:
        codes = self._chunk_codes.get(chunk)
        if codes is None:
            codes = self._chunk_codes[chunk] = "".join(map(self._code, self._ids_of(chunk)))
        return codes

    def _fast_chunks(self, text: str) -> tuple[list[str], list[tuple[int, int]], np.ndarray, np.ndarray] | None:
        """The text's chunks, the windows of chunks a special case crosses, the chunks' cached token ids and where
        each chunk's tokens start among them; None: no fast split for this text.

        Outside the windows the words are the chunks' cached tokens. Inside a window spaCy's matcher may combine
        tokens of several chunks, so the window's text is tokenized as it stands: no match reaches outside it, so
        what spaCy does inside it is what it does there in the whole text.
        """
        if not self.fast or "IS_ALPHA" in text:
            return None
        chunks = text.split()
        rows = self._rows(chunks)
        if rows is None:
            return None
        ids, counts = self._gather(rows, np.ones(len(rows), bool))
        starts = np.concatenate(([0], np.cumsum(counts)))
        candidates = self._candidates(rows)
        windows = self._crossing_windows(ids, starts, candidates.tolist()) if len(candidates) else []
        return chunks, windows, ids, starts

    def _rows(self, chunks: list[str]) -> np.ndarray | None:
        """The table rows of chunks, learning the new ones; None if one cannot be learnt."""
        index = self._chunk_index
        if not all(map(index.__contains__, chunks)):
            self._learn(set(chunks))
            index = self._chunk_index  # a reset makes a new one
            if not all(map(index.__contains__, chunks)):
                return None
        return np.fromiter(map(index.__getitem__, chunks), np.int64, len(chunks))

    def _candidates(self, rows: np.ndarray) -> np.ndarray:
        """Boundaries i (between rows[i] and rows[i + 1]) where the last token of one chunk and the first of the
        next are consecutive tokens of a multi-token special case."""
        if len(rows) < 2 or not self._boundary_pairs:
            return np.empty(0, np.int64)
        last_token = self._chunk_flat[self._chunk_bounds[rows[:-1] + 1] - 1]
        first_token = self._chunk_flat[self._chunk_bounds[rows[1:]]]
        risky = np.flatnonzero(self.pair_left[last_token] & self.pair_right[first_token])
        if not len(risky):
            return risky
        if self._pair_keys_generation != self.generation:
            lefts = self.token_array([left for left, _ in self._boundary_pairs])
            rights = self.token_array([right for _, right in self._boundary_pairs])
            self._pair_keys = np.unique((lefts << 32) | rights)
            self._pair_keys_generation = self.generation
        keys = (last_token[risky] << 32) | first_token[risky]
        return risky[np.isin(keys, self._pair_keys)]

    def _crossing_windows(self, ids: np.ndarray, starts: np.ndarray, candidates: list[int]) -> list[tuple[int, int]]:
        """Ranges [first, last] of chunks that multi-token special cases join, merged where they share a chunk.

        ``ids``: the text's cached token ids, chunk c's from ``starts[c]``; ``candidates``: the boundaries (after
        chunk i) where the last token of one chunk and the first of the next are consecutive tokens of a special
        case. The tokens around each boundary are matched against the special cases.
        """
        if self._pattern_ids_generation != self.generation:
            self._pattern_ids = {tuple(self.token_ids(list(p))) for p in self._patterns}
            self._pattern_ids_generation = self.generation
        patterns = self._pattern_ids
        longest = self._pattern_lengths[-1]
        bounds = starts.tolist()
        found: list[tuple[int, int]] = []
        for i in candidates:
            b = bounds[i + 1]  # the first token of chunk i + 1
            lo = max(0, b - longest + 1)
            words = ids[lo : b + longest - 1].tolist()
            for k in self._pattern_lengths:
                for start in range(max(lo, b - k + 1), min(b, lo + len(words) - k + 1)):
                    if tuple(words[start - lo : start - lo + k]) in patterns:
                        found.append((bisect_right(bounds, start) - 1, bisect_right(bounds, start + k - 1) - 1))
        windows: list[list[int]] = []
        for first, last in sorted(found):
            if windows and first <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], last)
            else:
                windows.append([first, last])
        return [(a, b) for a, b in windows]

    def _window_ids(
        self, text: str, windows: list[tuple[int, int]], ids: np.ndarray, starts: np.ndarray
    ) -> np.ndarray:
        """Word ids of a text some of whose chunks special cases join (see ``_fast_chunks``): the chunks'
        cached ids outside the windows, spaCy's tokens of each window's text inside."""
        spans = [m.span() for m in islice(re.finditer(r"\S+", text), windows[-1][1] + 1)]
        parts: list[np.ndarray] = []
        done = 0
        for first, last in windows:
            parts.append(ids[starts[done] : starts[first]])
            piece = text[spans[first][0] : spans[last][1]]
            found = self._nlp.tokenizer(piece).to_array([IDX, LENGTH]).tolist()
            words = [w for w in (piece[a : a + n].strip() for a, n in found) if w]
            parts.append(self.token_array(words))
            done = last + 1
        parts.append(ids[starts[done] :])
        return np.concatenate(parts)

    def _gather(self, rows: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokens of the used rows, in order, and each row's token count (0 where unused)."""
        starts = self._chunk_bounds[rows]
        counts = np.where(used, self._chunk_bounds[rows + 1] - starts, 0)
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        positions = np.repeat(starts - (ends - counts), counts) + np.arange(total)
        return self._chunk_flat[positions], counts

    def _whole_text_words(self, text: str) -> list[str]:
        """The slow path: spaCy's tokenizer on the whole text (datatrove's own function for its error case)."""
        self.slow_texts += 1
        if not self.fast or "IS_ALPHA" in text:
            return self.reference_words(text)
        spans = self._nlp.tokenizer(text).to_array([IDX, LENGTH]).tolist()
        return [word for word in (text[a : a + n].strip() for a, n in spans) if word]

    # -- what the filters ask for ------------------------------------------------------------------------------
    def batch_words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``split_into_words`` of every text: ``ids[offsets[i]:offsets[i + 1]]`` are text i's.

        One dictionary lookup per chunk and a numpy gather for the batch; a text with a chunk that could not be
        learnt, a special-case window or "IS_ALPHA" goes through ``words`` on its own.
        """
        count = len(texts)
        if not self.fast or not count:
            parts = [self.words(text) for text in texts]
            return _concatenated(parts)
        per_text = [text.split() for text in texts]
        chunks = list(chain.from_iterable(per_text))
        self._learn(set(chunks))
        rows = np.fromiter(map(self._chunk_index.get, chunks, repeat(-1)), np.int64, len(chunks))
        chunk_counts = np.fromiter(map(len, per_text), np.int64, count)
        text_of_chunk = np.repeat(np.arange(count), chunk_counts)
        alone = np.zeros(count, bool)  # texts that take the one-by-one path
        alone[[i for i, text in enumerate(texts) if "IS_ALPHA" in text]] = True
        alone[text_of_chunk[rows < 0]] = True
        rows[rows < 0] = 0
        ids, counts = self._gather(rows, ~alone[text_of_chunk])
        token_starts = np.concatenate(([0], np.cumsum(counts)))  # where each chunk's tokens start in ids
        chunk_offsets = np.concatenate(([0], np.cumsum(chunk_counts)))
        offsets = token_starts[chunk_offsets]
        parts: dict[int, np.ndarray] = {i: self.words(texts[i]) for i in np.flatnonzero(alone).tolist()}
        boundaries = self._candidates(rows)
        if len(boundaries):
            same_text = text_of_chunk[boundaries] == text_of_chunk[boundaries + 1]
            boundaries = boundaries[same_text & ~alone[text_of_chunk[boundaries]]]
            for i, candidates in _grouped(text_of_chunk[boundaries], boundaries):
                first_chunk = chunk_offsets[i]
                starts = token_starts[first_chunk : chunk_offsets[i + 1] + 1] - token_starts[first_chunk]
                text_ids = ids[offsets[i] : offsets[i + 1]]
                windows = self._crossing_windows(text_ids, starts, (candidates - first_chunk).tolist())
                if windows:
                    parts[i] = self._window_ids(texts[i], windows, text_ids, starts)
        if not parts:
            return ids, offsets
        return _concatenated([parts.get(i, ids[offsets[i] : offsets[i + 1]]) for i in range(count)])

    def words(self, text: str) -> np.ndarray:
        """Token ids of ``split_into_words(text)``."""
        split = self._fast_chunks(text)
        if split is None:
            return self.token_array(self._whole_text_words(text))
        _, windows, ids, starts = split
        return self._window_ids(text, windows, ids, starts) if windows else ids

    def word_count(self, text: str) -> int:
        """``len(split_into_words(text))``."""
        return len(self.words(text))

    def reference_words(self, text: str) -> list[str]:
        """datatrove's own ``split_into_words`` (the slow path)."""
        from datatrove.utils.text import split_into_words

        return split_into_words(text, self.language)

    def sentence_count(self, lines: list[str]) -> int:
        """``sum(len(split_into_sentences(line)) for line in lines)`` for lines without line breaks.

        Lines are split apart (the sentencizer never joins them), so only a line a special-case window touches is
        counted by datatrove's own function; the others are counted on their chunks' cached token classes.
        """
        if not lines:
            return 0
        joined = "\n".join(lines)
        split = self._fast_chunks(joined)
        if split is None:
            return self._reference_sentences(lines)
        _, windows, _, _ = split
        parts = _WS_SPLIT.split(joined)
        codes = map(self._codes_of, parts[0::2])
        gaps = map(_gap_code, parts[1::2])
        sequence = "".join(chain.from_iterable(zip(codes, gaps, strict=False))) + self._codes_of(parts[-1])
        if not windows:
            return len(lines) + len(_SENTENCE_START.findall(sequence))
        per_line = sequence.split("|")
        if len(per_line) != len(lines):
            return self._reference_sentences(lines)
        line_of_chunk = np.repeat(np.arange(len(lines)), [len(line.split()) for line in lines])
        slow = set()
        for first, last in windows:
            slow.update(range(int(line_of_chunk[first]), int(line_of_chunk[last]) + 1))
        fast_count = sum(
            1 + len(_SENTENCE_START.findall(codes)) for i, codes in enumerate(per_line) if i not in slow
        )
        return fast_count + self._reference_sentences([lines[i] for i in sorted(slow)])

    def _reference_sentences(self, lines: list[str]) -> int:
        from datatrove.utils.text import split_into_sentences

        if lines:
            self.slow_texts += 1
        return sum(len(split_into_sentences(line, self.language)) for line in lines)


def _gap_code(run: str) -> str:
    """The sentencizer class of a whitespace run: none for one space, N for a whitespace token, | for a new line.

    A run that ends a line counts as the whitespace token it leaves at the line's end; what starts the next line
    cannot start a sentence (the state resets at every line), so it is left out.
    """
    if "\n" in run:
        tail = run.partition("\n")[0]
        return "|" if tail in ("", " ") else "N|"
    return "" if run == " " else "N"


def _grouped(keys: np.ndarray, values: np.ndarray):
    """(key, values with that key) for sorted keys."""
    if not len(keys):
        return
    cuts = np.flatnonzero(np.diff(keys)) + 1
    for group in np.split(np.arange(len(keys)), cuts):
        yield int(keys[group[0]]), values[group]


def _concatenated(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in parts], dtype=np.int64)))
    ids = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.empty(0, np.int64)
    return ids, offsets


def _grown(array: np.ndarray, need: int) -> np.ndarray:
    """The array itself when it holds `need` items, else a copy with at least twice the room."""
    if len(array) >= need:
        return array
    bigger = np.zeros(max(need, 2 * len(array)), array.dtype)
    bigger[: len(array)] = array
    return bigger


_POWERS = np.ones(1, np.uint64)


def _powers(longest: int) -> np.ndarray:
    """``_HASH_BASE ** k`` modulo 2^64 for k = 0..longest (at least)."""
    global _POWERS
    if len(_POWERS) <= longest:
        factors = np.full(max(longest + 1, 2 * len(_POWERS)), _HASH_BASE, np.uint64)
        factors[0] = 1
        _POWERS = np.multiply.accumulate(factors)  # unsigned integers wrap: the powers modulo 2^64
    return _POWERS


_ALPHA = CodePointClass(str.isalpha)


def poly_hash(token: str) -> int:
    """The token hash ``WordSplitter.hash`` holds, one character at a time (the reference for the tests)."""
    value = 0
    for ch in token:
        value = (value * _HASH_BASE + ord(ch)) & _MASK
    return value
