"""spaCy's word split, from its tokenizer rules stored as data, without importing spaCy.

Importing spaCy imports thinc, which imports torch when torch is installed: seconds (and hundreds of MB) on every
fresh Dask worker. The English tokenizer's rules (special cases, prefix/suffix/infix patterns, URL and token matches)
and what its sentencizer needs are plain data and ``re`` patterns, so they are written once per spaCy version to
``spacy_rules/<language>-<version>.json`` by

    python -m pipelines.spacy_rules en

and a worker applies them in the order spaCy's ``Tokenizer`` does (special case of the whole piece, then prefixes
and suffixes peeled with special-case checks, then URL/token match, then infixes), then its phrase matcher of
special cases (``matcher_replacements``). Dedup leaves a piece the matcher would act on to spaCy; the quality
filters apply the matcher too. When no file matches the installed spaCy version (read from package metadata,
without importing spaCy), the rules are read from spaCy itself. ``tests/pipelines/test_dedup_spacy_rules.py`` and
``tests/pipelines/test_filters.py`` prove the split equal to spaCy's on stress sets.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RULES_DIR = Path(__file__).with_name("spacy_rules")


def installed_spacy_version() -> str | None:
    try:
        return importlib.metadata.version("spacy")
    except importlib.metadata.PackageNotFoundError:
        return None


def rules_path(language: str, version: str) -> Path:
    return RULES_DIR / f"{language}-{version}.json"


def _pattern(bound_method: object) -> dict | None:
    """The pattern behind a compiled regex's bound method, or None; anything not a ``re`` pattern cannot be stored."""
    if bound_method is None:
        return None
    pattern = getattr(bound_method, "__self__", None)
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
        raise ValueError(f"spaCy tokenizer rule {bound_method!r} is not a stored regular expression")
    return {"pattern": pattern.pattern, "flags": int(pattern.flags)}


def extract_rules(language: str = "en") -> dict:
    """The rules of the tokenizer datatrove uses for ``language``, as JSON-ready data (imports spaCy)."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    from spacy.attrs import IS_PUNCT, ORTH
    from spacy.lang.lex_attrs import is_punct

    nlp = load_word_tokenizer(language).tokenizer
    tokenizer = nlp.tokenizer
    return {
        "language": language,
        "spacy_version": installed_spacy_version(),
        "faster_heuristics": bool(tokenizer.faster_heuristics),
        "special_cases": {
            key: [t[ORTH] if ORTH in t else t["ORTH"] for t in value]
            for key, value in sorted(tokenizer.rules.items())
        },
        "prefix": _pattern(tokenizer.prefix_search),
        "suffix": _pattern(tokenizer.suffix_search),
        "infix": _pattern(tokenizer.infix_finditer),
        "token_match": _pattern(tokenizer.token_match),
        "url_match": _pattern(tokenizer.url_match),
        # what the sentencizer splits on: its sentence-final characters, and punctuation as the lexemes say
        "punct_chars": sorted(nlp.get_pipe("sentencizer").punct_chars),
        "is_punct": "unicode_category_P" if nlp.vocab.lex_attr_getters.get(IS_PUNCT) is is_punct else None,
    }


def write_rules(language: str = "en", folder: Path = RULES_DIR) -> Path:
    """Write the rules file for the installed spaCy version (atomically: temp name, then rename)."""
    rules = extract_rules(language)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{language}-{rules['spacy_version']}.json"
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as out:
        json.dump(rules, out, ensure_ascii=False, indent=0, sort_keys=True)
    os.chmod(out.name, 0o644)
    os.replace(out.name, target)
    return target


def _compile(entry: dict | None) -> re.Pattern | None:
    return None if entry is None else re.compile(entry["pattern"], entry["flags"])


@dataclass
class StoredRules:
    """spaCy's tokenizer rules for one language and spaCy version, applied to single whitespace pieces."""

    special_cases: dict[str, tuple[str, ...]]
    prefix: re.Pattern | None
    suffix: re.Pattern | None
    infix: re.Pattern | None
    token_match: re.Pattern | None
    url_match: re.Pattern | None
    # token sequences spaCy's phrase matcher turns into a special case after the affix pass, by first token
    matcher_patterns: dict[str, list[tuple[str, ...]]]
    # the sentencizer's sentence-final characters; whether a token is punctuation is "every character is in a
    # Unicode P category" (spaCy's default lexeme attribute) when unicode_punct, else unknown here
    punct_chars: frozenset[str] | None = None
    unicode_punct: bool = False

    @classmethod
    def from_data(cls, data: dict) -> StoredRules:
        rules = cls(
            special_cases={key: tuple(orths) for key, orths in data["special_cases"].items()},
            prefix=_compile(data["prefix"]),
            suffix=_compile(data["suffix"]),
            infix=_compile(data["infix"]),
            token_match=_compile(data["token_match"]),
            url_match=_compile(data["url_match"]),
            matcher_patterns={},
            punct_chars=frozenset(data["punct_chars"]) if "punct_chars" in data else None,
            unicode_punct=data.get("is_punct") == "unicode_category_P",
        )
        patterns = (
            tuple(rules._affix_pass(key, with_special_cases=False))
            for key in rules.special_cases
            if not data["faster_heuristics"]
            or rules._prefix_len(key)
            or rules._suffix_len(key)
            or rules._infixes(key)
            or " " in key
        )
        for pattern in patterns:
            if pattern:
                rules.matcher_patterns.setdefault(pattern[0], []).append(pattern)
        return rules

    def _prefix_len(self, text: str) -> int:
        match = self.prefix.search(text) if self.prefix is not None else None
        return match.end() - match.start() if match else 0

    def _suffix_len(self, text: str) -> int:
        match = self.suffix.search(text) if self.suffix is not None else None
        return match.end() - match.start() if match else 0

    def _infixes(self, text: str) -> list[re.Match]:
        return list(self.infix.finditer(text)) if self.infix is not None else []

    def _matches_whole(self, text: str) -> bool:
        return bool(
            (self.token_match is not None and self.token_match.match(text))
            or (self.url_match is not None and self.url_match.match(text))
        )

    def plainly_one_word(self, text: str) -> bool:
        """No rule can act on this piece: spaCy returns it as one token."""
        return not (
            text in self.special_cases
            or self._matches_whole(text)
            or self._prefix_len(text)
            or self._suffix_len(text)
            or self._infixes(text)
        )

    def split(self, text: str) -> list[str] | None:
        """spaCy's tokens of one whitespace piece, or None where spaCy itself must decide (its phrase matcher)."""
        words = self._affix_pass(text, with_special_cases=True)
        if len(words) > 1 and self._holds_matcher_pattern(words):
            return None
        return words

    def _holds_matcher_pattern(self, words: list[str]) -> bool:
        for i, word in enumerate(words):
            for pattern in self.matcher_patterns.get(word, ()):
                if tuple(words[i : i + len(pattern)]) == pattern:
                    return True
        return False

    def matcher_replacements(
        self, tokens: list[str], gaps: list[str | None]
    ) -> list[tuple[int, int, tuple[str, ...]]]:
        """What spaCy's special-case matcher does to a sequence of tokens: (start, end, new tokens), ascending.

        ``gaps[i]`` is what separates tokens i and i + 1: "" (one whitespace piece), " " (a single space) or None
        (other whitespace, which spaCy keeps as a token no pattern holds). As in ``Tokenizer._apply_special_cases``:
        every occurrence of every pattern is a candidate (overlapping ones too); candidates are taken longest
        first, then leftmost first, and one is kept when neither its first nor its last token is in a candidate
        taken before it (kept or not); a kept span whose text is a rule key becomes that rule's tokens.
        """
        found = []
        for i, token in enumerate(tokens):
            for pattern in self.matcher_patterns.get(token, ()):
                end = i + len(pattern)
                if tuple(tokens[i:end]) == pattern and None not in gaps[i : end - 1]:
                    found.append((i, end))
        found.sort(key=lambda span: (span[0] - span[1], span[0]))
        seen: set[int] = set()
        replaced = []
        for start, end in found:
            if start not in seen and end - 1 not in seen:
                text = tokens[start] + "".join(gaps[j] + tokens[j + 1] for j in range(start, end - 1))
                rule = self.special_cases.get(text)
                if rule is not None:
                    replaced.append((start, end, rule))
            seen.update(range(start, end))
        return sorted(replaced)

    def pre_tokens(self, text: str) -> list[str]:
        """The tokens of one whitespace piece before the matcher runs (the affix pass, special cases included)."""
        return self._affix_pass(text, with_special_cases=True)

    def _affix_pass(self, text: str, with_special_cases: bool) -> list[str]:
        """spaCy's first pass over one piece: special case, else affixes peeled, then URL/token match or infixes."""
        specials = self.special_cases if with_special_cases else {}
        if text in specials:
            return list(specials[text])
        prefixes: list[str] = []
        suffixes: list[str] = []
        rest = self._peel_affixes(text, prefixes, suffixes, specials)
        return prefixes + self._split_core(rest, specials) + suffixes[::-1]

    def _peel_affixes(
        self, text: str, prefixes: list[str], suffixes: list[str], specials: dict[str, tuple[str, ...]]
    ) -> str:
        """Prefixes and suffixes taken off the piece, stopping at a special case, as spaCy's tokenizer does."""
        last_size = 0
        while text and len(text) != last_size:
            if (self.token_match is not None and self.token_match.match(text)) or text in specials:
                break
            last_size = len(text)
            pre_len = self._prefix_len(text)
            if pre_len and text[pre_len:] in specials:
                prefixes.append(text[:pre_len])
                return text[pre_len:]
            suf_len = self._suffix_len(text[pre_len:])
            if suf_len and text[:-suf_len] in specials:
                suffixes.append(text[-suf_len:])
                return text[:-suf_len]
            if pre_len and suf_len and pre_len + suf_len <= len(text):
                prefixes.append(text[:pre_len])
                suffixes.append(text[-suf_len:])
                text = text[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(text[:pre_len])
                text = text[pre_len:]
            elif suf_len:
                suffixes.append(text[-suf_len:])
                text = text[:-suf_len]
        return text

    def _split_core(self, text: str, specials: dict[str, tuple[str, ...]]) -> list[str]:
        if not text:
            return []
        if text in specials:
            return list(specials[text])
        if self._matches_whole(text):
            return [text]
        words: list[str] = []
        start = 0
        for match in self._infixes(text):
            if match.start() == 0:  # an infix at the very start does not split
                continue
            if match.start() != start:
                words.append(text[start : match.start()])
            if match.start() != match.end():
                words.append(match.group())
            start = match.end()
        if text[start:]:
            words.append(text[start:])
        return words


def load_rules(
    language: str = "en", folder: Path = RULES_DIR, version: str | None = None
) -> StoredRules | None:
    """The stored rules for the installed spaCy version, or None when there are none (use spaCy itself)."""
    version = version if version is not None else installed_spacy_version()
    path = folder / f"{language}-{version}.json"
    if version is None or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("spacy_version") != version or data.get("language") != language:
        return None
    return StoredRules.from_data(data)


def main(argv: list[str] | None = None) -> None:
    """Write the rules file of each language named on the command line for the installed spaCy."""
    for language in (argv if argv is not None else sys.argv[1:]) or ["en"]:
        print(write_rules(language))


if __name__ == "__main__":
    main()
