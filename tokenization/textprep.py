"""What `tokenizers` does to a text before its pre-tokenizer, replayed in Python for the tiktoken engine.

The fast path runs tiktoken's encoder, which knows nothing of added tokens or normalizers; `TextPreparer` cuts
non-special added tokens out of a text and Unicode-normalizes the rest exactly as `tokenizers` does, so the
pieces tiktoken sees are the ones `tokenizers` would pre-tokenize. It depends on nothing else in the package:
the `Tokenizer` holds one, the fast path builds one, the conversion cache stores its spec.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def unicode_normalizer(forms: Sequence[str]) -> Callable[[str], str]:
    """A normalizer applying the given Unicode normalization forms in order (NFC, NFD, NFKC, NFKD)."""
    forms = tuple(forms)

    def normalize(text: str) -> str:
        for form in forms:
            if not unicodedata.is_normalized(form, text):
                text = unicodedata.normalize(form, text)
        return text

    return normalize


@dataclass(frozen=True)
class AddedSpec:
    """An added token's content and the flags that decide how tokenizers matches it in text."""

    content: str
    special: bool = False
    normalized: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False

    @classmethod
    def of(cls, token: Any) -> AddedSpec:
        """From a `tokenizers.AddedToken` (or anything with the same attributes)."""
        return cls(
            content=token.content,
            special=bool(token.special),
            normalized=bool(token.normalized),
            lstrip=bool(token.lstrip),
            rstrip=bool(token.rstrip),
            single_word=bool(token.single_word),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextPreparer:
    """What `tokenizers` does to a text before its pre-tokenizer, replayed in Python for the tiktoken engine.

    In order: non-special added tokens with normalized=False are cut out of the raw text (leftmost-longest;
    special tokens take part in the matching but are skipped, which leaves them as text); each remaining piece
    is Unicode-normalized; added tokens with normalized=True are cut out of the normalized pieces; a ByteLevel
    pre-tokenizer with add_prefix_space=True prepends a space. `split(text)` returns the pieces to encode
    (str) and the ids of the added tokens found (int), in order.
    """

    def __init__(self, forms: Sequence[str], prefix_space: bool, added: Any) -> None:
        self.normalize = unicode_normalizer(forms) if forms else None
        self.prefix_space = prefix_space
        tokens = [(int(i), t) for i, t in added]
        self.has_added = any(not t.special for _, t in tokens)
        self._raw = self._matcher([(i, t.content, t.special) for i, t in tokens if not t.normalized])
        norm = self.normalize or (lambda text: text)
        self._normalized = self._matcher([(i, norm(t.content), t.special) for i, t in tokens if t.normalized])

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TextPreparer:
        """From the JSON-able `preparer_spec` that the fast path's `convert` returns (and the disk cache stores)."""
        added = [(i, AddedSpec(**fields)) for i, fields in spec["added"]]
        return cls(spec["forms"], spec["prefix_space"], added)

    def _matcher(self, tokens: list[tuple[int, str, bool]]) -> tuple[Any, dict[str, int | None]] | None:
        tokens = [t for t in tokens if t[1]]
        if not self.has_added or not tokens:
            return None
        # Longest first: at the leftmost position where any token matches, Python's alternation then takes
        # the longest, which is tokenizers' LeftmostLongest rule. Special tokens map to None (skipped).
        ordered = sorted(tokens, key=lambda t: (-len(t[1]), t[1]))
        pattern = re.compile("|".join(re.escape(content) for _, content, _ in ordered))
        return pattern, {content: (None if special else i) for i, content, special in ordered}

    @staticmethod
    def _cut(text: str, matcher: tuple[Any, dict[str, int | None]] | None) -> list[str | int]:
        if matcher is None:
            return [text]
        pattern, ids = matcher
        out: list[str | int] = []
        cursor = 0
        for m in pattern.finditer(text):
            token_id = ids[m.group()]
            if token_id is None:
                continue
            if cursor < m.start():
                out.append(text[cursor : m.start()])
            out.append(token_id)
            cursor = m.end()
        if cursor < len(text) or not out:
            out.append(text[cursor:])
        return out

    def simple(self, text: str) -> str:
        """The text to encode when there are no non-special added tokens."""
        if self.normalize is not None:
            text = self.normalize(text)
        if self.prefix_space and not text.startswith(" "):
            text = " " + text
        return text

    def split(self, text: str) -> list[str | int]:
        out: list[str | int] = []
        for part in self._cut(text, self._raw):
            if isinstance(part, int):
                out.append(part)
            else:
                out.extend(self._cut(self.normalize(part) if self.normalize else part, self._normalized))
        return out
