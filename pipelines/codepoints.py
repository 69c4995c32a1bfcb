"""Text as arrays of code points, and per-code-point tables, for the numpy passes of dedup and the filters.

Both turn strings into UTF-32 code points (``surrogatepass``: a lone surrogate survives the round trip, as in a
Python string) and look properties of code points up in tables the size of Unicode: datatrove's punctuation
characters, or a ``str``/``unicodedata`` property filled in as code points first appear.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache

import numpy as np


def code_points(text: str) -> np.ndarray:
    """The code points of a string (read-only: a view of the encoded bytes)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def from_code_points(points: np.ndarray) -> str:
    return points.tobytes().decode("utf-32-le", "surrogatepass")


def _mask_of(characters) -> np.ndarray:
    mask = np.zeros(sys.maxunicode + 1, dtype=bool)
    mask[[ord(c) for c in characters]] = True
    return mask


@cache
def punctuation_mask() -> np.ndarray:
    """True at every character of datatrove's PUNCTUATION: what simplify_text turns into a space."""
    from datatrove.utils.text import PUNCTUATION

    return _mask_of(PUNCTUATION)


@cache
def punctuation_set_mask() -> np.ndarray:
    """True at every character of datatrove's PUNCTUATION_SET (PUNCTUATION and other scripts' sentence ends): what
    a "symbol word" of the Gopher quality filter is made of."""
    from datatrove.utils.text import PUNCTUATION_SET

    return _mask_of(PUNCTUATION_SET)


class CodePointClass:
    """Whether code points have a property, looked up with ``unicodedata``/``str`` as they first appear."""

    def __init__(self, test: Callable[[str], bool]) -> None:
        self.test = test
        self.known = np.full(sys.maxunicode + 1, -1, dtype=np.int8)  # -1: not looked up yet

    def table(self, points: np.ndarray) -> np.ndarray:
        """The whole table (1 where the property holds), with every code point of `points` looked up."""
        state = self.known[points]
        if (state < 0).any():
            for cp in np.unique(points[state < 0]).tolist():
                self.known[cp] = self.test(chr(cp))
        return self.known

    def mask(self, points: np.ndarray) -> np.ndarray:
        return self.table(points)[points].astype(bool)
