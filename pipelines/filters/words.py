"""Words exactly as datatrove's ``split_into_words`` gives them, computed once per distinct chunk of text.

datatrove splits words with spaCy's tokenizer on the whole document (inside a memory zone, so nothing it learns is
kept) and again for every filter. spaCy itself works chunk by chunk: it cuts the text at whitespace and tokenizes
each non-whitespace chunk on its own (that is what its internal cache is keyed on). So the words of a text are the
tokens of its chunks, in order, once whitespace tokens are dropped, which datatrove does.

The one thing that crosses a chunk boundary is spaCy's special-case matcher, which runs over the tokens of the
whole text after the affix pass. Its matches inside one chunk are the same wherever the chunk stands; a match that
straddles chunks separated by a single space never changes tokens itself (its text holds that space, and no rule key
has whitespace inside), but it marks its tokens as taken, so it can stop a match inside a chunk that would have
changed that chunk's tokens (a ":)" inside ":)x", after "("). So a chunk's tokens alone are its tokens in every text,
unless the matcher changed them when it stood alone: only those "matched" chunks are tokenized again where they
stand, together with the chunks any match touching them can reach. Texts containing "IS_ALPHA" (datatrove's spaCy
error path) and languages whose word tokenizer is not a plain spaCy one are split by datatrove's own function.

spaCy itself is not imported (it imports thinc, and thinc imports torch: seconds and hundreds of MB on every fresh
worker). Its rules are read from ``pipelines/spacy_rules/`` for the installed version (from spaCy itself when no file
matches) and applied by ``pipelines.spacy_rules.StoredRules``: the affix pass and the matcher. Most chunks do not even
need that: ``AffixShapes`` settles the plain ones and those with one-character affixes. The tests compare every path
with spaCy's own tokenizer.

Each distinct chunk is tokenized once and its tokens are kept as integer ids in one flat array (chunk i owns
``flat[bounds[i]:bounds[i + 1]]``); per-token properties the filters need live in numpy arrays indexed by id,
computed for many new tokens at once from their code points. The words of a batch of texts are then one dictionary
lookup per chunk and a numpy gather (``batch_words``).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from itertools import chain, repeat
from types import SimpleNamespace

import numpy as np

from pipelines.codepoints import CodePointClass, code_points, punctuation_set_mask
from pipelines.filters.affixes import (
    AffixShapes,
    guarded_infix_finditer,
    guarded_prefix_search,
    tail_suffix_search,
)
from pipelines.spacy_rules import StoredRules, extract_rules, load_rules

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
            self._rules = _rules_of(language)
            self.fast = self._rules is not None
        if self.fast:
            rules = self._rules
            self._special_keys = set(rules.special_cases)
            self._punct_chars = set(rules.punct_chars)
            self._patterns = {p for ps in rules.matcher_patterns.values() for p in ps if len(p) > 1}
            self._boundary_pairs = {pair for p in self._patterns for pair in zip(p, p[1:], strict=False)}
            # how many chunks a match can reach past its own
            self._reach = max(map(len, self._patterns), default=1) - 1
            # the same searches as spaCy's, answered faster (see pipelines/filters/affixes.py)
            self._searches = SimpleNamespace(
                prefix_search=guarded_prefix_search(rules.prefix.search) if rules.prefix else None,
                suffix_search=tail_suffix_search(rules.suffix.search) if rules.suffix else None,
                infix_finditer=guarded_infix_finditer(rules.infix.finditer) if rules.infix else None,
                token_match=rules.token_match.match if rules.token_match else None,
                url_match=rules.url_match.match if rules.url_match else None,
            )
            self._shapes = AffixShapes(
                self._searches, self._special_keys, self._patterns, self._boundary_pairs
            )
            # the affix pass with the same searches
            self._affix_pass = dataclasses.replace(
                rules,
                prefix=SimpleNamespace(search=self._searches.prefix_search) if rules.prefix else None,
                suffix=SimpleNamespace(search=self._searches.suffix_search) if rules.suffix else None,
                infix=SimpleNamespace(finditer=self._searches.infix_finditer) if rules.infix else None,
            ).pre_tokens
        self._reset()

    # -- vocabulary --------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.generation = getattr(self, "generation", -1) + 1  # token ids from an older generation are stale
        self._chunk_index: dict[str, int] = {}  # chunk -> its row in the flat token table
        # chunk i's tokens: _chunk_flat[bounds[i]:bounds[i + 1]]
        self._chunk_bounds = np.zeros(1025, np.int64)
        self._chunk_flat = np.zeros(4096, np.int64)
        # the matcher changed the chunk's tokens when it stood alone
        self._chunk_matched = np.zeros(1024, bool)
        self._n_chunks = 0
        self._chunk_codes: dict[str, str] = {"": ""}  # sentencizer classes of a chunk's tokens, when asked
        self._token_codes: dict[int, str] = {}
        self._token_id: dict[str, int] = {}
        self.tokens: list[str] = []
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
            code = "P" if token in self._punct_chars else "O" if _is_punct(token) else "N"
            self._token_codes[token_id] = code
        return code

    # -- chunks ------------------------------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> None:
        """Tokenize every chunk of these texts not seen before."""
        if self.fast:
            self._learn(set(chain.from_iterable(map(str.split, texts))))

    def _learn(self, chunks: set[str]) -> None:
        if self._n_chunks > self.max_chunks:
            self._reset()
        self._learn_new(chunks)

    def _learn_new(self, chunks: set[str]) -> None:
        """Tokenize the chunks not in the table (the table is never cleared here)."""
        missing = sorted(chunks.difference(self._chunk_index))
        for start in range(0, len(missing), 4096):
            self._tokenize_chunks(missing[start : start + 4096])

    def _tokenize_chunks(self, chunks: list[str]) -> None:
        simple, split, split_parts, rest = self._shapes.split(chunks)
        self._store(simple, [[c] for c in simple], checked=True)
        self._store(split, split_parts, checked=True)
        if not rest:
            return
        # the affix pass, then the matcher, which can only act on chunks holding two consecutive tokens of a pattern
        rules, pairs = self._rules, self._boundary_pairs
        parts = [self._affix_pass(chunk) for chunk in rest]
        matched = [False] * len(rest)
        for i, tokens in enumerate(parts):
            if any(map(pairs.__contains__, zip(tokens, tokens[1:], strict=False))):
                final = _replaced(tokens, rules.matcher_replacements(tokens, [""] * (len(tokens) - 1)))
                matched[i] = final != tokens
                parts[i] = final
        self._store(rest, parts, matched=matched)

    def _store(
        self,
        chunks: list[str],
        parts: list[list[str]],
        checked: bool = False,
        matched: list[bool] | None = None,
    ) -> None:
        """Append chunks and their tokens to the flat table (``checked``: the parts are known to join up;
        ``matched``: which chunks' tokens spaCy's matcher changed, none if not given)."""
        if matched is None:
            matched = [False] * len(chunks)
        # an unexpected split is never cached: the texts holding the chunk take the whole-text path
        if not checked:
            kept = [
                (c, p, m) for c, p, m in zip(chunks, parts, matched, strict=True) if p and "".join(p) == c
            ]
            chunks, parts, matched = [c for c, _, _ in kept], [p for _, p, _ in kept], [m for _, _, m in kept]
        if not chunks:
            return
        ids = self.token_array(list(chain.from_iterable(parts)))
        counts = np.fromiter(map(len, parts), np.int64, len(parts))
        first, last = self._n_chunks, self._n_chunks + len(chunks)
        flat_start = int(self._chunk_bounds[first])
        flat_end = flat_start + len(ids)
        self._chunk_bounds = _grown(self._chunk_bounds, last + 1)
        self._chunk_flat = _grown(self._chunk_flat, flat_end)
        self._chunk_matched = _grown(self._chunk_matched, last)
        self._chunk_matched[first:last] = matched
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

    def _fast_chunks(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The text's cached token ids, where each chunk's tokens start among them, and the chunks the matcher
        changed on their own (retokenized where they stand: ``_retokenized``); None: no fast split for this text."""
        if not self.fast or "IS_ALPHA" in text:
            return None
        rows = self._rows(text.split())
        if rows is None:
            return None
        ids, counts = self._gather(rows, np.ones(len(rows), bool))
        starts = np.concatenate(([0], np.cumsum(counts)))
        return ids, starts, np.flatnonzero(self._chunk_matched[rows])

    def _rows(self, chunks: list[str]) -> np.ndarray | None:
        """The table rows of chunks, learning the new ones; None if one cannot be learnt."""
        index = self._chunk_index
        if not all(map(index.__contains__, chunks)):
            self._learn(set(chunks))
            index = self._chunk_index  # a reset makes a new one
            if not all(map(index.__contains__, chunks)):
                return None
        return np.fromiter(map(index.__getitem__, chunks), np.int64, len(chunks))

    def _retokenized(self, text: str, ids: np.ndarray, starts: np.ndarray, matched: np.ndarray) -> np.ndarray:
        """Word ids of a text holding chunks the matcher changed on their own (chunk c's cached ids:
        ``ids[starts[c]:starts[c + 1]]``; ``matched``: those chunks, ascending)."""
        in_context = self._in_context(text, ids, starts, matched)
        if in_context is None:
            return self.token_array(self._whole_text_words(text))
        parts: list[np.ndarray] = []
        done = 0  # chunks before this one are in parts
        for c, words in sorted(in_context.items()):
            parts += [ids[starts[done] : starts[c]], self.token_array(words)]
            done = c + 1
        parts.append(ids[starts[done] :])
        return np.concatenate(parts)

    def _in_context(
        self, text: str, ids: np.ndarray, starts: np.ndarray, matched: np.ndarray
    ) -> dict[int, list[str]] | None:
        """The tokens of each matched chunk where it stands in the text (None: the chunks were not found).

        A match that touches chunk c has at most ``reach + 1`` tokens, one chunk each at least, so it lies within
        chunks c - reach .. c + reach; whether a match inside c is applied depends only on the matches that overlap
        it. So the matcher run over the tokens of that stretch before the matcher (the cached ones, for the chunks
        it leaves alone) gives c's tokens in the whole text; the other chunks keep theirs.
        """
        begins, ends = _chunk_spans(text)
        if len(begins) != len(starts) - 1:
            return None
        rules, reach, vocabulary = self._rules, self._reach, self.tokens
        changed = set(matched.tolist())
        found: dict[int, list[str]] = {}
        for group in _stretches(matched, reach):
            first, last = max(int(group[0]) - reach, 0), min(int(group[-1]) + reach, len(begins) - 1)
            tokens: list[str] = []
            # between tokens: "" inside a chunk, " " one space, None other whitespace
            gaps: list[str | None] = []
            where: dict[int, tuple[int, int]] = {}
            for j in range(first, last + 1):
                if j > first:
                    gaps.append(" " if text[ends[j - 1] : begins[j]] == " " else None)
                if j in changed:
                    own = self._affix_pass(text[begins[j] : ends[j]])
                else:
                    own = [vocabulary[t] for t in ids[starts[j] : starts[j + 1]].tolist()]
                where[j] = (len(tokens), len(tokens) + len(own))
                gaps += [""] * (len(own) - 1)
                tokens += own
            replacements = rules.matcher_replacements(tokens, gaps)
            for c in group.tolist():
                lo, hi = where[c]
                inside = [(a - lo, b - lo, new) for a, b, new in replacements if lo <= a and b <= hi]
                found[c] = _replaced(tokens[lo:hi], inside)
        return found

    def _gather(self, rows: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokens of the used rows, in order, and each row's token count (0 where unused)."""
        starts = self._chunk_bounds[rows]
        counts = np.where(used, self._chunk_bounds[rows + 1] - starts, 0)
        return self._chunk_flat[range_positions(starts, counts)], counts

    def _whole_text_words(self, text: str) -> list[str]:
        """The slow path: datatrove's own function on the whole text."""
        self.slow_texts += 1
        return self.reference_words(text)

    # -- what the filters ask for ------------------------------------------------------------------------------
    def batch_words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``split_into_words`` of every text: ``ids[offsets[i]:offsets[i + 1]]`` are text i's.

        One dictionary lookup per chunk and a numpy gather for the batch; a text with a chunk that could not be
        learnt or "IS_ALPHA" goes through datatrove's function, one with a chunk the matcher changed through
        ``_retokenized``.
        """
        count = len(texts)
        if not self.fast or not count:
            parts = [self.words(text) for text in texts]
            return _concatenated(parts)
        per_text = [text.split() for text in texts]
        chunks = list(chain.from_iterable(per_text))
        rows = np.fromiter(map(self._chunk_index.get, chunks, repeat(-1)), np.int64, len(chunks))
        unknown: list[int] | range = np.flatnonzero(rows < 0).tolist()
        if unknown:  # learn the new chunks, then look them up; a full table starts over before the batch
            if self._n_chunks > self.max_chunks:
                self._reset()
                unknown = range(len(chunks))
            self._learn_new({chunks[i] for i in unknown})
            rows[unknown] = np.fromiter(
                map(self._chunk_index.get, (chunks[i] for i in unknown), repeat(-1)), np.int64, len(unknown)
            )
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
        # texts with "IS_ALPHA" or a chunk that could not be learnt: datatrove's function (as ``words`` would do;
        # called directly, so the table is not cleared while this batch's ids are in use)
        parts = {i: self.token_array(self._whole_text_words(texts[i])) for i in np.flatnonzero(alone).tolist()}
        matched = np.flatnonzero(self._chunk_matched[rows] & ~alone[text_of_chunk])
        for i, chunks_of_text in _grouped(text_of_chunk[matched], matched):
            first_chunk = chunk_offsets[i]
            starts = token_starts[first_chunk : chunk_offsets[i + 1] + 1] - token_starts[first_chunk]
            text_ids = ids[offsets[i] : offsets[i + 1]]
            parts[i] = self._retokenized(texts[i], text_ids, starts, chunks_of_text - first_chunk)
        if not parts:
            return ids, offsets
        return _concatenated([parts.get(i, ids[offsets[i] : offsets[i + 1]]) for i in range(count)])

    def words(self, text: str) -> np.ndarray:
        """Token ids of ``split_into_words(text)``."""
        split = self._fast_chunks(text)
        if split is None:
            return self.token_array(self._whole_text_words(text))
        ids, starts, matched = split
        return self._retokenized(text, ids, starts, matched) if len(matched) else ids

    def word_count(self, text: str) -> int:
        """``len(split_into_words(text))``."""
        return len(self.words(text))

    def reference_words(self, text: str) -> list[str]:
        """datatrove's own ``split_into_words`` (the slow path)."""
        from datatrove.utils.text import split_into_words

        return split_into_words(text, self.language)

    def sentence_count(self, lines: list[str]) -> int:
        """``sum(len(split_into_sentences(line)) for line in lines)`` for lines without line breaks.

        Lines are split apart (the sentencizer never joins them), so sentences are counted on the chunks' token
        classes: the cached ones, or those of a chunk's tokens where it stands if the matcher changed it.
        """
        if not lines:
            return 0
        joined = "\n".join(lines)
        split = self._fast_chunks(joined)
        if split is None:
            return self._reference_sentences(lines)
        ids, starts, matched = split
        parts = _WS_SPLIT.split(joined)
        codes = [self._codes_of(chunk) for chunk in parts[0::2]]
        if len(matched):
            in_context = self._in_context(joined, ids, starts, matched)
            if in_context is None:
                return self._reference_sentences(lines)
            # chunk c of split() is parts[0::2][at[c]]
            at = [i for i, chunk in enumerate(parts[0::2]) if chunk]
            for c, words in in_context.items():
                codes[at[c]] = "".join(self._code(t) for t in self.token_ids(words))
        gaps = map(_gap_code, parts[1::2])
        sequence = "".join(chain.from_iterable(zip(codes, gaps, strict=False))) + codes[-1]
        return len(lines) + len(_SENTENCE_START.findall(sequence))

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


_SPACE = CodePointClass(str.isspace)


def _chunk_spans(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Where each chunk of ``text.split()`` begins and ends (whitespace as ``str.isspace`` says, as split does)."""
    points = code_points(text)
    solid = np.concatenate(([False], ~_SPACE.mask(points), [False]))
    edges = np.flatnonzero(solid[1:] != solid[:-1])
    return edges[0::2], edges[1::2]


def _stretches(chunks: np.ndarray, reach: int):
    """Ascending chunk indices in groups whose neighbourhoods (``reach`` chunks either side) touch or overlap."""
    cuts = np.flatnonzero(np.diff(chunks) > 2 * reach + 1) + 1
    return np.split(chunks, cuts)


def range_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions ``starts[i]``, ``starts[i] + 1``, ... (``counts[i]`` of them) of every range, in order."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - (ends - counts), counts) + np.arange(total)


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


def _inner_space(key: str) -> bool:
    return any(ch.isspace() for ch in key.strip())


def _replaced(tokens: list[str], replacements: list[tuple[int, int, tuple[str, ...]]]) -> list[str]:
    """Tokens with the (start, end, new tokens) spans, ascending and disjoint, put in."""
    out, done = [], 0
    for start, end, new in replacements:
        out += tokens[done:start]
        out += new
        done = end
    return out + tokens[done:]


def _is_punct(token: str) -> bool:
    """spaCy's default IS_PUNCT lexeme attribute: every character is in a Unicode punctuation category."""
    return all(unicodedata.category(ch).startswith("P") for ch in token)


def _rules_of(language: str) -> StoredRules | None:
    """spaCy's tokenizer rules for the language, from the stored file (no spaCy import) or read from spaCy; None
    when the split cannot be proved equal from them (a rule key with whitespace inside, which a match across
    chunks could apply; a one-token pattern whose rule changes the token; a sentencizer or punctuation attribute
    not stored)."""
    rules = load_rules(language)
    if rules is None or rules.punct_chars is None:
        try:
            rules = StoredRules.from_data(extract_rules(language))
        except ValueError:  # a rule that is not a regular expression cannot be applied here
            return None
    one_token_rules_change = any(
        len(p) == 1 and rules.special_cases.get(p[0]) != p
        for ps in rules.matcher_patterns.values()
        for p in ps
    )
    if one_token_rules_change or not rules.unicode_punct or any(map(_inner_space, rules.special_cases)):
        return None
    return rules
