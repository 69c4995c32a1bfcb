"""The word lists RULER draws from (wonderwords) and seeded draws of RULER's needle kinds."""

from __future__ import annotations

import string
import uuid
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def wonderwords_lists() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Nouns, adjectives and verbs of the wonderwords package, the lists RULER draws its words from."""
    from importlib.resources import files

    assets = files("wonderwords") / "assets"

    def read(name: str) -> tuple[str, ...]:
        words = (assets / name).read_text(encoding="utf-8").split("\n")
        return tuple(w.strip() for w in words if w.strip())

    return read("nounlist.txt"), read("adjectivelist.txt"), read("verblist.txt")


@lru_cache(maxsize=1)
def common_word_pool() -> tuple[str, ...]:
    """RULER's cwe word list: the sorted set of wonderwords nouns, adjectives and verbs."""
    nouns, adjs, verbs = wonderwords_lists()
    return tuple(sorted(set(nouns) | set(adjs) | set(verbs)))


ENGLISH_WORDS_HINT = (
    "RULER's english_words.json (NVIDIA/RULER scripts/data/synthetic/json/english_words.json), or a .txt file "
    "of one word a line"
)


@lru_cache(maxsize=4)
def english_words(path: str) -> tuple[str, ...]:
    """The larger English word list RULER's cwe falls back to when it needs more words than wonderwords holds:
    RULER's english_words.json (an object whose values are the words, or a list) or a .txt, one word a line."""
    import json
    from pathlib import Path

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the English word list ({exc})") from exc
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}); expected {ENGLISH_WORDS_HINT}") from exc
        words = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path}: expected {ENGLISH_WORDS_HINT}")
    else:
        words = text.split("\n")
    out = tuple(w.strip() for w in words if w.strip())
    if not out:
        raise ValueError(f"{path}: the English word list is empty")
    return out


class Draws:
    """Seeded random values of RULER's kinds: 7-digit numbers, adjective-noun words, uuids, variable names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        nouns, adjs, _ = wonderwords_lists()
        self._nouns = nouns
        self._adjs = adjs

    def numbers(self, n: int) -> list[str]:
        return [str(v) for v in self.rng.integers(10**6, 10**7, size=n)]

    def words(self, n: int) -> list[str]:
        # Uniform over adjective-noun pairs, as RULER's list of all pairs, without building its 6M strings.
        a = self.rng.integers(0, len(self._adjs), size=n)
        b = self.rng.integers(0, len(self._nouns), size=n)
        return [f"{self._adjs[i]}-{self._nouns[j]}" for i, j in zip(a.tolist(), b.tolist(), strict=True)]

    def uuids(self, n: int) -> list[str]:
        raw = self.rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        return [str(uuid.UUID(bytes=bytes(r), version=4)) for r in raw]

    def draw(self, kind: str, n: int) -> list[str]:
        if kind == "numbers":
            return self.numbers(n)
        if kind == "words":
            return self.words(n)
        if kind == "uuids":
            return self.uuids(n)
        raise ValueError(f"unknown needle type {kind!r} (numbers, words, uuids)")

    def distinct(self, kind: str, n: int) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        while len(out) < n:
            for v in self.draw(kind, n - len(out)):
                if v not in seen:
                    seen.add(v)
                    out.append(v)
        return out

    def letters(self, n: int, k: int) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        while len(out) < n:
            v = "".join(string.ascii_uppercase[i] for i in self.rng.integers(0, 26, size=k))
            if v not in seen:
                seen.add(v)
                out.append(v)
        return out
