"""Word n-gram shingles equal to datatrove's MinHash shingles, without running spaCy on every document.

datatrove hashes the n-grams of ``word_tokenize(simplify_text(text))``, where the word tokenizer is spaCy's. Its
cost is almost all spaCy, on text that ``simplify_text`` has already lowercased and stripped of punctuation. Two
facts make a fast path exact:

* spaCy's tokenizer first cuts text at whitespace and then tokenizes each piece on its own (special cases, prefixes,
  suffixes, infixes and URL matches all act within one piece; the English tokenizer has no special case that spans
  whitespace, which ``PieceTokenizer`` checks when it loads). So the words of a text are the concatenation of the
  words of its whitespace pieces.
* The pieces of real text repeat. Each new piece is split once and remembered: most pieces stay one word
  ("house"), some split ("cannot" -> "can", "not"; "0km" -> "0", "km"). spaCy's English rules, stored as data for
  the installed spaCy version (``spacy_rules.py``), split a new piece without importing spaCy (and the torch that
  thinc imports with it); a piece they leave open, or every piece when no rules match the spaCy version, goes to
  spaCy's tokenizer (all such pieces of a batch in one call).

``simplify_text`` is reproduced step for step (``simplify_to_bytes``, the reference) and, for whole batches, with
compiled passes (``simplified_batch``: ASCII texts in one pass over bytes; other texts keep Python's ``lower``, the
number pattern and NFD, with the per-character passes compiled). A batch then lives in one byte buffer: its pieces
are looked up in a compiled table (``piece_table.py``), the buffer is copied only where a piece splits, and the
n-grams are hashed where they lie. ``tests/pipelines/test_dedup_signatures.py`` and ``bench/dedup.py`` compare the
shingles with datatrove's own ``get_shingles``; where a language's tokenizer has a special case spanning
whitespace, every document takes datatrove's own path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np

from pipelines.codepoints import CodePointClass, code_points, from_code_points, punctuation_mask
from pipelines.dedup.kernels import marks_dropped_utf8, ngram_hashes, punctuation_to_spaces, simplify_ascii
from pipelines.dedup.piece_table import PieceTable, TextBatch
from pipelines.spacy_rules import StoredRules, load_rules

# datatrove's NUMBERS_PATTERN where the only digits are 0-9 and the only separators "." and ","
_ASCII_NUMBERS = re.compile(rb"[0-9]+(?:[.,][0-9]+)?")


@cache
def _ascii_punctuation_table() -> bytes:
    from datatrove.utils.text import PUNCTUATION

    table = bytearray(range(256))
    for ch in PUNCTUATION:
        if ord(ch) < 128:
            table[ord(ch)] = ord(" ")
    return bytes(table)


@cache
def _ascii_punctuation_mask() -> np.ndarray:
    return np.frombuffer(_ascii_punctuation_table(), dtype=np.uint8) == ord(" ")


_COMBINING_MARKS = CodePointClass(lambda ch: unicodedata.category(ch) == "Mn")  # simplify_text drops them
_WHITESPACE = CodePointClass(str.isspace)  # what str.split() splits at


def simplified_batch(texts: list[str]) -> TextBatch:
    """``simplify_to_bytes`` of each text, in one buffer: the ASCII texts (most web text) in one compiled pass."""
    ascii_ = np.fromiter(map(str.isascii, texts), dtype=bool, count=len(texts))
    parts = [t.encode("ascii") if a else _simplify_non_ascii(t) for t, a in zip(texts, ascii_.tolist(), strict=True)]
    batch = TextBatch.of(parts)
    return TextBatch(*simplify_ascii(batch.buffer, batch.starts, batch.ends, ascii_, _ascii_punctuation_mask()))


def _simplify_non_ascii(text: str) -> bytes:
    """``simplify_to_bytes`` with its per-character passes compiled (the reference below where a lone surrogate
    makes UTF-8 fail, so the error is the same)."""
    from datatrove.utils.text import NUMBERS_PATTERN

    lowered = text.lower()
    if lowered.isascii():
        return simplify_to_bytes(text)
    points = code_points(NUMBERS_PATTERN.sub("0", lowered))
    spaced = punctuation_to_spaces(points, punctuation_mask(), _WHITESPACE.table(points))
    points = code_points(unicodedata.normalize("NFD", from_code_points(spaced)))
    marks = _COMBINING_MARKS.table(points)
    data, encoded = marks_dropped_utf8(points, marks, _WHITESPACE.table(points))
    return data.tobytes() if encoded else simplify_to_bytes(text)


def simplify_to_bytes(text: str) -> bytes:
    """``datatrove.utils.text.simplify_text(text)`` with the default TextNormConfig, encoded as UTF-8."""
    from datatrove.utils.text import NUMBERS_PATTERN

    text = text.lower()
    if text.isascii():  # the same steps on bytes: ASCII digits, byte-for-byte punctuation, nothing to strip
        data = _ASCII_NUMBERS.sub(b"0", text.encode("ascii"))
        return b" ".join(data.translate(_ascii_punctuation_table()).split())
    text = NUMBERS_PATTERN.sub("0", text)
    points = code_points(text).copy()
    points[punctuation_mask()[points]] = ord(" ")
    text = " ".join(from_code_points(points).split())
    points = code_points(unicodedata.normalize("NFD", text))
    text = from_code_points(points[~_COMBINING_MARKS.mask(points)])
    # dropping a lone mark can leave two spaces in a row; spaCy's words never hold whitespace either way
    return " ".join(text.split()).encode("utf-8")


class PieceTokenizer:
    """spaCy's word split of simplified text, one whitespace piece at a time, remembering what each piece gives."""

    def __init__(self, language: str = "en", max_cached: int = 2_000_000, rules: StoredRules | None = None):
        self.language = language
        # spaCy's rules stored for the installed spaCy version decide most pieces without importing spaCy
        self.rules = rules if rules is not None else load_rules(language)
        self._spacy_tokenizer = None
        if self.rules is not None:
            keys = self.rules.special_cases
        else:
            keys = getattr(self._spacy, "rules", None) or {}
        # a special case that contains whitespace next to other characters would make pieces depend on each other
        self.exact = (self.rules is not None or self._spacy is not None) and not any(
            any(c.isspace() for c in key) and not key.isspace() for key in keys
        )
        self.max_cached = max_cached
        self.table = PieceTable()  # every piece met, and the words of those that split

    @property
    def _spacy(self):
        """spaCy's tokenizer, loaded on first use (with stored rules, only for pieces they leave to spaCy)."""
        if self._spacy_tokenizer is None:
            from datatrove.utils.word_tokenizers import load_word_tokenizer

            nlp = getattr(load_word_tokenizer(self.language), "tokenizer", None)
            self._spacy_tokenizer = getattr(nlp, "tokenizer", None)
        return self._spacy_tokenizer

    def joined(self, batch: TextBatch) -> TextBatch:
        """The words of each simplified text of a batch (whitespace pieces, single spaces), joined by single spaces.

        A batch none of whose pieces splits is its own answer; otherwise it is copied once with the pieces that
        split replaced by their words.
        """
        pieces = self.table.pieces(batch)
        unknown = np.flatnonzero(pieces.ids < 0)
        if len(unknown) and self.table.count + len(unknown) > self.max_cached:
            self.table.clear()
            pieces = self.table.pieces(batch)
            unknown = np.arange(len(pieces.ids))
        data = batch.buffer.tobytes() if len(unknown) else b""
        while len(unknown):  # a round per XXH64 shared by two new pieces, which np.unique keeps one of
            _, first = np.unique(pieces.hashes[unknown], return_index=True)
            at, lengths = pieces.at[unknown[first]].tolist(), pieces.lengths[unknown[first]].tolist()
            learned = self._learn([data[s : s + n] for s, n in zip(at, lengths, strict=True)])
            self.table.add(list(learned), list(learned.values()))
            pieces.ids[unknown] = self.table.find(
                batch.buffer, pieces.at[unknown], pieces.lengths[unknown], pieces.hashes[unknown]
            )
            unknown = unknown[pieces.ids[unknown] < 0]
        return self.table.replaced(batch, pieces)

    def _learn(self, new: list[bytes]) -> dict[bytes, bytes | None]:
        """The words of new pieces joined by spaces, or None for a piece that is one word."""
        texts = {piece: piece.decode("utf-8") for piece in new}
        learned: dict[bytes, bytes | None] = {}
        if self.rules is not None:
            hard = self._learn_from_rules(texts, learned)
        else:
            # spaCy's own first checks: a piece that no special case, URL, prefix, suffix or infix rule matches is
            # one token as it is; only the others go through the tokenizer
            hard = [piece for piece, text in texts.items() if not self._plainly_one_token(text)]
            learned.update(dict.fromkeys(set(texts).difference(hard)))
        if hard:
            hard.sort()
            self._tokenize(hard, [texts[piece] for piece in hard], learned)
        return learned

    @staticmethod
    def _remember(learned: dict[bytes, bytes | None], piece: bytes, text: str, words: list[str]) -> None:
        learned[piece] = None if words == [text] else " ".join(words).encode("utf-8")

    def _learn_from_rules(self, texts: dict[bytes, str], learned: dict[bytes, bytes | None]) -> list[bytes]:
        """Split new pieces by the stored rules; returns the pieces left to spaCy."""
        rules, hard = self.rules, []
        for piece, text in texts.items():
            if rules.plainly_one_word(text):
                learned[piece] = None
                continue
            got = rules.split(text)
            if got is None:
                hard.append(piece)
            else:
                self._remember(learned, piece, text, got)
        return hard

    def _plainly_one_token(self, text: str) -> bool:
        tok = self._spacy
        return not (
            text in tok.rules
            or (tok.token_match is not None and tok.token_match(text))
            or (tok.url_match is not None and tok.url_match(text))
            or (tok.prefix_search is not None and tok.prefix_search(text))
            or (tok.suffix_search is not None and tok.suffix_search(text))
            or (tok.infix_finditer is not None and next(tok.infix_finditer(text), None) is not None)
        )

    def _tokenize(self, pieces: list[bytes], texts: list[str], learned: dict[bytes, bytes | None]) -> None:
        joined = " ".join(texts)
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
        doc = self._spacy(joined)
        owner = np.searchsorted(starts, np.fromiter((t.idx for t in doc), dtype=np.int64), side="right") - 1
        words: list[list[str]] = [[] for _ in pieces]
        for token, i in zip(doc, owner.tolist(), strict=True):
            text = token.text.strip()
            if text:
                words[i].append(text)
        for piece, text, got in zip(pieces, texts, words, strict=True):
            self._remember(learned, piece, text, got)


@cache
def piece_tokenizer(language: str = "en") -> PieceTokenizer:
    """One per process and language: spaCy loads once and what it taught about pieces serves every later rank."""
    return PieceTokenizer(language)


@dataclass
class ShingleBatch:
    """The shingles of a batch of documents: ``hashes[offsets[i]:offsets[i + 1]]`` belong to document i."""

    hashes: np.ndarray
    offsets: np.ndarray


class Shingler:
    """Hashed word n-grams of documents, equal to datatrove's ``MinhashDedupSignature.get_shingles``."""

    def __init__(self, n_grams: int = 5, language: str = "en"):
        self.n_grams = n_grams
        self.tokenizer = piece_tokenizer(language)
        self._reference_step = None

    def reference_shingles(self, text: str) -> np.ndarray:
        """datatrove's own shingles (the slow path, and the reference the tests compare with)."""
        if self._reference_step is None:
            from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

            self._reference_step = MinhashDedupSignature(
                "memory://unused", config=MinhashConfig(n_grams=self.n_grams)
            )
        return self._reference_step.get_shingles(text).reshape(-1)

    def shingles(self, texts: list[str]) -> ShingleBatch:
        if not self.tokenizer.exact:
            parts = [self.reference_shingles(t) for t in texts]
            offsets = np.cumsum([0] + [len(p) for p in parts])
            return ShingleBatch(np.concatenate(parts) if parts else np.empty(0, np.uint64), offsets)
        return self.hash_ngrams(self.tokenizer.joined(simplified_batch(texts)))

    def hash_ngrams(self, batch: TextBatch) -> ShingleBatch:
        """XXH64 of the word n-grams of texts whose words are joined by single spaces."""
        return ShingleBatch(*ngram_hashes(batch.buffer, batch.starts, batch.ends, self.n_grams))
