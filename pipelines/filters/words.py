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

Each distinct chunk is tokenized once (many chunks at a time, separated by newlines, inside a memory zone) and its
tokens are kept as integer ids; per-token properties the filters need live in numpy arrays indexed by id.
"""

from __future__ import annotations

import re
from itertools import chain, islice

import numpy as np

# characters datatrove treats as symbols (a word made only of these is a "symbol word")
from datatrove.utils.text import PUNCTUATION_SET
from spacy.attrs import IDX, IS_PUNCT, LENGTH

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
        self._reset()

    # -- vocabulary --------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.generation = getattr(self, "generation", -1) + 1  # token ids from an older generation are stale
        if self.fast and self.generation:
            self._nlp = self._private_nlp()  # drops the lexemes spaCy learnt meanwhile
        self._chunk_ids: dict[str, tuple[int, ...]] = {}
        self._chunk_codes: dict[str, str] = {"": ""}
        self._ends_risky: set[str] = set()  # chunks whose last token can start a special case across chunks
        self._starts_risky: set[str] = set()  # chunks whose first token can end one
        self._token_id: dict[str, int] = {}
        self.tokens: list[str] = []
        self.codes: list[str] = []  # each token's sentencizer class (see _SENTENCE_START)
        self._size = 0
        cap = 1024
        self.length = np.zeros(cap, np.int64)
        self.non_symbol = np.zeros(cap, bool)
        self.has_alpha = np.zeros(cap, bool)
        self.hash = np.zeros(cap, np.uint64)
        self.hash_shift = np.zeros(cap, np.uint64)

    def _grow(self, need: int) -> None:
        cap = len(self.length)
        while cap < need:
            cap *= 2
        for name in ("length", "non_symbol", "has_alpha", "hash", "hash_shift"):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def token_ids(self, tokens: list[str]) -> list[int]:
        """Ids of token strings, adding the new ones to the vocabulary."""
        new = [t for t in dict.fromkeys(tokens) if t not in self._token_id]
        if new:
            start = self._size
            if start + len(new) > len(self.length):
                self._grow(start + len(new))
            for offset, token in enumerate(new):
                self._token_id[token] = start + offset
            self.tokens += new
            if self.fast:
                self.codes += map(self._code, new)
            self._size += len(new)
            sl = slice(start, self._size)
            self.length[sl] = [len(t) for t in new]
            self.non_symbol[sl] = [any(ch not in PUNCTUATION_SET for ch in t) for t in new]
            self.has_alpha[sl] = [any(ch.isalpha() for ch in t) for t in new]
            self.hash[sl] = [_poly_hash(t) for t in new]
            self.hash_shift[sl] = [pow(_HASH_BASE, len(t), 1 << 64) for t in new]
        return [self._token_id[t] for t in tokens]

    def _code(self, token: str) -> str:
        if token in self._punct_chars:
            return "P"
        return "O" if self._is_punct(token) else "N"

    def _private_nlp(self):
        """datatrove's spaCy pipeline, our own copy: used outside memory zones, its vocabulary grows until a reset.

        Its lexemes carry no attributes: the tokenizer's splits depend on its affix rules, special cases and URL
        and token matchers only, never on lexeme attributes, so the tokens are the same and new words cost less.
        """
        from datatrove.utils.word_tokenizers import SpaCyTokenizer

        nlp = SpaCyTokenizer(self.language).tokenizer
        self._is_punct = nlp.vocab.lex_attr_getters[IS_PUNCT]
        nlp.vocab.lex_attr_getters = {}
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
        if not self.fast:
            return
        if len(self._chunk_ids) > self.max_chunks or len(self._nlp.vocab) > 2 * self.max_chunks:
            self._reset()
        seen = self._chunk_ids
        missing = [c for c in set(chain.from_iterable(map(str.split, texts))) if c not in seen]
        for start in range(0, len(missing), 4096):
            self._tokenize_chunks(missing[start : start + 4096])

    def _tokenize_chunks(self, chunks: list[str]) -> None:
        simple, suffixed, suffixed_parts, rest = self._split_simple(chunks)
        self._store(simple, [[c] for c in simple])
        self._store(suffixed, suffixed_parts)
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
        """Chunks spaCy keeps whole; chunks it splits into a word and one trailing character, with their tokens;
        and the others (for spaCy).

        spaCy splits a chunk only where its prefix, suffix or infix patterns match, or as a special case says.
        A chunk that is no special case and that none of the three patterns matches anywhere is one token
        (token_match and url_match can only keep a chunk whole, and the special-case matcher needs a special
        case equal to the chunk to act on a single token).

        The commonest other shape is a word and a one-character suffix ("word," "end." "it)"). spaCy's
        ``_split_affixes`` (spacy/tokenizer.pyx) on it: token_match on the chunk would stop it (so: none), the
        chunk is no special case, no prefix; the suffix is cut unless the rest is a special case (so: it is not);
        then the rest is the core when it is no special case and has no prefix, suffix or infix match, and the
        tokens are [core, suffix] unless a multi-token special case is exactly that pair.
        """
        tok = self._nlp.tokenizer
        prefix = tok.prefix_search or (lambda c: None)
        suffix = tok.suffix_search or (lambda c: None)
        infix = tok.infix_finditer or (lambda c: iter(()))
        token_match = tok.token_match or (lambda c: None)
        specials, patterns = self._special_keys, self._patterns
        simple, suffixed, suffixed_parts, rest = [], [], [], []
        for chunk in chunks:
            if chunk in specials or prefix(chunk):
                rest.append(chunk)
                continue
            found = suffix(chunk)
            if found is None:
                (rest if next(infix(chunk), None) is not None else simple).append(chunk)
                continue
            core = chunk[:-1]
            if (
                found.end() - found.start() != 1
                or not core
                or core in specials
                or token_match(chunk)
                or prefix(core)
                or suffix(core)
                or next(infix(core), None) is not None
                or (core, chunk[-1]) in patterns
            ):
                rest.append(chunk)
                continue
            suffixed.append(chunk)
            suffixed_parts.append([core, chunk[-1]])
        return simple, suffixed, suffixed_parts, rest

    def _store(self, chunks: list[str], parts: list[list[str]]) -> None:
        ids = self.token_ids(list(chain.from_iterable(parts)))
        codes = self.codes
        at = 0
        for chunk, chunk_parts in zip(chunks, parts, strict=True):
            end = at + len(chunk_parts)
            # an unexpected split is never cached: the texts holding the chunk take the whole-text path
            if chunk_parts and "".join(chunk_parts) == chunk:
                chunk_ids = tuple(ids[at:end])
                self._chunk_ids[chunk] = chunk_ids
                self._chunk_codes[chunk] = "".join([codes[i] for i in chunk_ids])
                if self.tokens[chunk_ids[-1]] in self._pair_lefts:
                    self._ends_risky.add(chunk)
                if self.tokens[chunk_ids[0]] in self._pair_rights:
                    self._starts_risky.add(chunk)
            at = end

    def _fast_chunks(self, text: str) -> tuple[list[str], list[tuple[int, int]]] | None:
        """The text's chunks and the windows of chunks a special case crosses; None: no fast split for this text.

        Outside the windows the words are the chunks' cached tokens. Inside a window spaCy's matcher may combine
        tokens of several chunks, so the window's text is tokenized as it stands: no match reaches outside it, so
        what spaCy does inside it is what it does there in the whole text.
        """
        if not self.fast or "IS_ALPHA" in text:
            return None
        chunks = text.split()
        ids = self._chunk_ids
        if not all(map(ids.__contains__, chunks)):
            self._tokenize_chunks(list({c for c in chunks if c not in ids}))
            if not all(map(ids.__contains__, chunks)):
                return None
        if len(chunks) > 1 and self._boundary_pairs:
            n = len(chunks) - 1
            ends_risky = np.fromiter(map(self._ends_risky.__contains__, chunks[:-1]), bool, n)
            starts_risky = np.fromiter(map(self._starts_risky.__contains__, chunks[1:]), bool, n)
            candidates = np.flatnonzero(ends_risky & starts_risky).tolist()
            if candidates:
                return chunks, self._crossing_windows(chunks, candidates)
        return chunks, []

    def _crossing_windows(self, chunks: list[str], candidates: list[int]) -> list[tuple[int, int]]:
        """Ranges [first, last] of chunks that multi-token special cases join, merged where they share a chunk.

        ``candidates``: the boundaries (after chunk i) where the last token of one chunk and the first of the next
        are consecutive tokens of a special case; the tokens around each are matched against the special cases.
        """
        ids, tokens, pairs = self._chunk_ids, self.tokens, self._boundary_pairs
        longest = self._pattern_lengths[-1]
        found: list[tuple[int, int]] = []
        for i in candidates:
            if (tokens[ids[chunks[i]][-1]], tokens[ids[chunks[i + 1]][0]]) not in pairs:
                continue
            # every chunk has a token: longest - 1 chunks on each side hold any match across this boundary
            lo, hi = max(0, i - longest + 2), min(len(chunks), i + longest)
            words, owner = [], []
            for c in range(lo, hi):
                words += [tokens[t] for t in ids[chunks[c]]]
                owner += [c] * len(ids[chunks[c]])
            b = owner.index(i + 1)
            for k in self._pattern_lengths:
                for start in range(max(0, b - k + 1), min(b, len(words) - k + 1)):
                    if tuple(words[start : start + k]) in self._patterns:
                        found.append((owner[start], owner[start + k - 1]))
        windows: list[list[int]] = []
        for first, last in sorted(found):
            if windows and first <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], last)
            else:
                windows.append([first, last])
        return [(a, b) for a, b in windows]

    def _window_ids(self, text: str, chunks: list[str], windows: list[tuple[int, int]]) -> np.ndarray:
        """Word ids of a text some of whose chunks special cases join (see ``_fast_chunks``): the chunks'
        cached ids outside the windows, spaCy's tokens of each window's text inside."""
        ids = self._chunk_ids
        spans = [m.span() for m in islice(re.finditer(r"\S+", text), windows[-1][1] + 1)]
        parts: list[np.ndarray] = []
        done = 0
        for first, last in windows:
            parts.append(np.fromiter(chain.from_iterable(map(ids.__getitem__, chunks[done:first])), np.int64))
            piece = text[spans[first][0] : spans[last][1]]
            found = self._nlp.tokenizer(piece).to_array([IDX, LENGTH]).tolist()
            words = [w for w in (piece[a : a + n].strip() for a, n in found) if w]
            parts.append(np.asarray(self.token_ids(words), dtype=np.int64))
            done = last + 1
        parts.append(np.fromiter(chain.from_iterable(map(ids.__getitem__, chunks[done:])), np.int64))
        return np.concatenate(parts)

    def _whole_text_words(self, text: str) -> list[str]:
        """The slow path: spaCy's tokenizer on the whole text (datatrove's own function for its error case)."""
        self.slow_texts += 1
        if not self.fast or "IS_ALPHA" in text:
            return self.reference_words(text)
        spans = self._nlp.tokenizer(text).to_array([IDX, LENGTH]).tolist()
        return [word for word in (text[a : a + n].strip() for a, n in spans) if word]

    # -- what the filters ask for ------------------------------------------------------------------------------
    def words(self, text: str) -> np.ndarray:
        """Token ids of ``split_into_words(text)``; call ``prepare`` on the batch first."""
        split = self._fast_chunks(text)
        if split is None:
            return np.asarray(self.token_ids(self._whole_text_words(text)), dtype=np.int64)
        chunks, windows = split
        if windows:
            return self._window_ids(text, chunks, windows)
        return np.fromiter(chain.from_iterable(map(self._chunk_ids.__getitem__, chunks)), dtype=np.int64)

    def word_count(self, text: str) -> int:
        """``len(split_into_words(text))``."""
        split = self._fast_chunks(text)
        if split is None:
            return len(self._whole_text_words(text))
        chunks, windows = split
        if windows:
            return len(self._window_ids(text, chunks, windows))
        return sum(map(len, map(self._chunk_ids.__getitem__, chunks)))

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
        chunks, windows = split
        parts = _WS_SPLIT.split(joined)
        codes = map(self._chunk_codes.__getitem__, parts[0::2])
        gaps = map(_gap_code, parts[1::2])
        sequence = "".join(chain.from_iterable(zip(codes, gaps, strict=False))) + self._chunk_codes[parts[-1]]
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


def _poly_hash(token: str) -> int:
    value = 0
    for ch in token:
        value = (value * _HASH_BASE + ord(ch)) & _MASK
    return value
