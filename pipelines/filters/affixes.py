"""spaCy's affix searches answered faster, and the chunk shapes they settle without spaCy (``AffixShapes``).

The suffix search is answered from the last few characters of a string and remembered.

spaCy's suffix rules are one regular expression, an alternation of branches each ending at ``$``; the tokenizer
only uses the length of the match (``find_suffix``: ``match.end() - match.start()``). Python's ``search`` returns
the match with the leftmost start, and every branch's match ends at the end of the string, so that length is the
longest any branch matches: the alternation can be cut into groups and the longest of their matches taken.

A branch of bounded width (what it consumes plus what its lookbehinds look at) that has no other anchor than its
final ``$`` can only see the last ``width + 1`` characters: on those characters it matches exactly as on the whole
string. (A string ending in a newline, where ``$`` can also match before it, goes to the original search.) spaCy's English suffixes are 81 such branches of at most 6
characters and one unbounded one (two or more dots). So the bounded branches are searched on the string's tail and
the result is kept per tail of the longest reach (cleared past a million tails), the unbounded branches on the whole
string. Where the rules do not have this shape (another anchor, flags, no top-level alternation) the original
search is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from re import _parser as sre_parse

SHORT_REACH = 3  # branches that see at most this many final characters are searched together on that short tail
_ANCHORS_OTHER_THAN_END = {
    sre_parse.AT_BEGINNING,
    sre_parse.AT_BEGINNING_STRING,
    sre_parse.AT_BOUNDARY,
    sre_parse.AT_NON_BOUNDARY,
    sre_parse.AT_END_STRING,
    sre_parse.AT_BEGINNING_LINE,
    sre_parse.AT_END_LINE,
    sre_parse.AT_LOC_BOUNDARY,
    sre_parse.AT_LOC_NON_BOUNDARY,
    sre_parse.AT_UNI_BOUNDARY,
    sre_parse.AT_UNI_NON_BOUNDARY,
}


class Span:
    """What spaCy reads of a match: its start and end."""

    __slots__ = ("_start", "_end")

    def __init__(self, start: int, end: int):
        self._start, self._end = start, end

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end


def _reach(items: sre_parse.SubPattern) -> int | None:
    """How many characters before the match's end a branch can look at; None if unbounded or differently anchored."""
    width = items.getwidth()[1]
    if width >= sre_parse.MAXREPEAT:
        return None
    behind = 0
    stack = [items]
    while stack:
        for op, av in stack.pop():
            if op is sre_parse.AT and av in _ANCHORS_OTHER_THAN_END:
                return None
            if op in (sre_parse.GROUPREF, sre_parse.GROUPREF_EXISTS):
                return None
            if op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                direction, sub = av
                sub_width = sub.getwidth()[1]
                if sub_width >= sre_parse.MAXREPEAT:
                    return None
                if direction < 0:
                    behind += sub_width  # every lookbehind, added up: a bound, however they nest
                stack.append(sub)
            elif op is sre_parse.SUBPATTERN:
                stack.append(av[-1])
            elif op is sre_parse.BRANCH:
                stack.extend(av[1])
            elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT):
                stack.append(av[2])
            elif op is sre_parse.ATOMIC_GROUP:
                stack.append(av)
    return width + behind + 1


def _branches(pattern: re.Pattern) -> list[str] | None:
    """The source text of each top-level branch, or None when the pattern is not a plain alternation."""
    if pattern.flags & ~(re.UNICODE):
        return None
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    parts = _split_top_level(pattern.pattern)
    if parts is None or len(parts) != len(tree.data[0][1][1] if _is_branch(tree) else [tree]):
        return None
    return parts


def _is_branch(tree: sre_parse.SubPattern) -> bool:
    return len(tree.data) == 1 and tree.data[0][0] is sre_parse.BRANCH


def _split_top_level(source: str) -> list[str] | None:
    """Split a pattern's source at its top-level ``|`` (outside groups and character classes)."""
    parts, depth, in_class, start, i = [], 0, False, 0, 0
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if source[i + 1 : i + 2] == "^":
                i += 1
            if source[i + 1 : i + 2] == "]":  # a leading ] is a member
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
        i += 1
    parts.append(source[start:])
    return parts if depth == 0 and not in_class else None


def tail_suffix_search(suffix_search: Callable | None) -> Callable | None:
    """A function equal to spaCy's ``suffix_search`` for ``find_suffix``, faster: see the module docstring."""
    pattern = getattr(suffix_search, "__self__", None)
    if not isinstance(pattern, re.Pattern) or suffix_search != pattern.search:
        return suffix_search
    sources = _branches(pattern)
    if sources is None:
        return suffix_search
    by_reach: dict[int, list[str]] = {}
    unbounded = []
    for source in sources:
        reach = _reach(sre_parse.parse(source, pattern.flags))
        if reach is None:
            unbounded.append(source)
        else:
            by_reach.setdefault(reach, []).append(source)
    if not by_reach:
        return suffix_search
    # most branches are one character and a lookbehind: those are answered per tail of few characters, which
    # repeat (so they are remembered); the few longer ones are searched on the string's tail
    short = [b for r, branches in by_reach.items() if r <= SHORT_REACH for b in branches]
    long = [b for r, branches in by_reach.items() if r > SHORT_REACH for b in branches]
    short_reach = max((r for r in by_reach if r <= SHORT_REACH), default=0)
    long_reach = max((r for r in by_reach if r > SHORT_REACH), default=0)
    short_search = re.compile("|".join(short), pattern.flags).search if short else None
    tail_search = re.compile("|".join(long), pattern.flags).search if long else None
    long_search = re.compile("|".join(unbounded), pattern.flags).search if unbounded else None
    # a string holding none of the characters each branch of a group needs is not searched for that group
    tail_needs = _needed_by_all(long, pattern.flags)
    long_needs = _needed_by_all(unbounded, pattern.flags)
    reach = max(short_reach, long_reach)
    known: dict[str, int] = {}  # the bounded branches' longest match (-1: none), per tail of `reach` characters

    def bounded(tail: str) -> int:
        length = -1
        if short_search is not None:
            match = short_search(tail[-short_reach:])
            if match is not None:
                length = match.end() - match.start()
        if tail_search is not None:
            text = tail[-long_reach:]
            if tail_needs is None or not tail_needs.isdisjoint(text):
                match = tail_search(text)
                if match is not None:
                    length = max(length, match.end() - match.start())
        return length

    def length_of(string: str) -> int:
        """The length of the suffix match (-1: none)."""
        if string[-1:] == "\n":  # $ may match before that newline: ends differ, so lengths do not order matches
            match = suffix_search(string)
            return match.end() - match.start() if match is not None else -1
        tail = string[-reach:]
        length = known.get(tail)
        if length is None:
            length = known[tail] = bounded(tail)
            if len(known) > 1_000_000:
                known.clear()
        if long_search is not None and (long_needs is None or not long_needs.isdisjoint(string)):
            match = long_search(string)
            if match is not None:
                length = max(length, match.end() - match.start())
        return length

    def search(string: str) -> Span | None:
        if string[-1:] == "\n":
            return suffix_search(string)
        length = length_of(string)
        return Span(len(string) - length, len(string)) if length >= 0 else None

    search.length = length_of  # type: ignore[attr-defined]

    search.groups = [(short_reach, len(short)), (long_reach, len(long))]  # type: ignore[attr-defined]
    # any match holds one of these characters (None: some branch needs none we can name)
    search.needed = _needed_by_all(sources, pattern.flags)  # type: ignore[attr-defined]
    search.unbounded = len(unbounded)  # type: ignore[attr-defined]
    return search


def first_characters(items: sre_parse.SubPattern | list) -> tuple[frozenset[str] | None, bool]:
    """The characters a match of this (parsed) pattern can start by consuming, and whether it can be empty.

    None for the set when it cannot be listed (a negated class, a category, any character): the caller then has
    no shortcut. Zero-width items (anchors, lookarounds) consume nothing and are passed over, which can only make
    the set larger than needed.
    """
    found: set[str] = set()
    for op, av in items:
        first, nullable = _item_first(op, av)
        if first is None:
            return None, False
        found |= first
        if not nullable:
            return frozenset(found), False
    return frozenset(found), True


def _item_first(op, av) -> tuple[set[str] | None, bool]:
    if op is sre_parse.LITERAL:
        return {chr(av)}, False
    if op is sre_parse.IN:
        chars: set[str] = set()
        for kind, value in av:
            if kind is sre_parse.LITERAL:
                chars.add(chr(value))
            elif kind is sre_parse.RANGE:
                chars.update(map(chr, range(value[0], value[1] + 1)))
            else:  # NEGATE, CATEGORY, ...
                return None, False
        return chars, False
    if op in (sre_parse.AT, sre_parse.ASSERT, sre_parse.ASSERT_NOT):
        return set(), True
    if op is sre_parse.SUBPATTERN:
        first, nullable = first_characters(av[-1])
        return (set(first) if first is not None else None), nullable
    if op is sre_parse.ATOMIC_GROUP:
        first, nullable = first_characters(av)
        return (set(first) if first is not None else None), nullable
    if op is sre_parse.BRANCH:
        chars, any_nullable = set(), False
        for branch in av[1]:
            first, nullable = first_characters(branch)
            if first is None:
                return None, False
            chars |= first
            any_nullable |= nullable
        return chars, any_nullable
    if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT):
        low, _, sub = av
        first, nullable = first_characters(sub)
        return (set(first) if first is not None else None), nullable or low == 0
    return None, False  # anything else (any character, a group reference...): no shortcut


def guarded_prefix_search(prefix_search: Callable | None) -> Callable | None:
    """spaCy's prefix search, skipped for a string whose first character no prefix rule can start with."""
    pattern = getattr(prefix_search, "__self__", None)
    if not isinstance(pattern, re.Pattern) or prefix_search != pattern.search:
        return prefix_search
    first, nullable = first_characters(sre_parse.parse(pattern.pattern, pattern.flags))
    if first is None or nullable or not _anchored_at_start(pattern):
        return prefix_search

    def search(string: str):
        return prefix_search(string) if string and string[0] in first else None

    search.first = first  # type: ignore[attr-defined]
    return search


def guarded_infix_finditer(infix_finditer: Callable | None) -> Callable | None:
    """spaCy's infix search, skipped for a string none of whose characters an infix rule can start with."""
    pattern = getattr(infix_finditer, "__self__", None)
    if not isinstance(pattern, re.Pattern) or infix_finditer != pattern.finditer:
        return infix_finditer
    first, nullable = first_characters(sre_parse.parse(pattern.pattern, pattern.flags))
    if first is None or nullable:
        return infix_finditer

    def finditer(string: str):
        return iter(()) if first.isdisjoint(string) else infix_finditer(string)

    finditer.first = first  # type: ignore[attr-defined]
    return finditer


def _anchored_at_start(pattern: re.Pattern) -> bool:
    """Does every match start at the string's start (the pattern begins with ``^`` and has no MULTILINE flag)?"""
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    return (
        not pattern.flags & re.MULTILINE
        and bool(tree.data)
        and tree.data[0] == (sre_parse.AT, sre_parse.AT_BEGINNING)
    )


def needed_characters(items: sre_parse.SubPattern | list) -> frozenset[str] | None:
    """Characters of which any match must contain at least one (the smallest such set found), or None.

    Each item a match cannot skip and that consumes at least one character (a literal, a class, a group or
    repeat that cannot be empty, or the inside of a positive lookaround, which looks at characters of the same
    string) starts with one of its first characters: any of those sets will do.
    """
    best: frozenset[str] | None = None
    for op, av in items:
        if op is sre_parse.ASSERT:
            first, nullable = first_characters(av[1])
        elif op in (sre_parse.AT, sre_parse.ASSERT_NOT):
            continue
        else:
            first, nullable = _item_first(op, av)
            first = frozenset(first) if first is not None else None
        if first is not None and not nullable and (best is None or len(first) < len(best)):
            best = frozenset(first)
    return best


def _needed_by_all(sources: list[str], flags: int) -> frozenset[str] | None:
    """The union of what each branch needs (None if one branch needs nothing we can name)."""
    union: set[str] = set()
    for source in sources:
        needed = needed_characters(sre_parse.parse(source, flags))
        if needed is None:
            return None
        union |= needed
    return frozenset(union)


def untouchable_characters(prefix_search, suffix_search, infix_finditer) -> frozenset[str] | None:
    """Characters one of which any prefix, suffix or infix match must contain; a string holding none of them is
    matched by none of the three. None when the searches are not the ones built here (nothing is known)."""
    parts = (
        getattr(prefix_search, "first", None),
        getattr(suffix_search, "needed", None),
        getattr(infix_finditer, "first", None),
    )
    if any(part is None for part in parts):
        return None
    return frozenset().union(*parts)


def _never(string: str) -> None:
    return None


def _length(match) -> int:
    """A match's length (-1: no match)."""
    return match.end() - match.start() if match is not None else -1


class AffixShapes:
    """spaCy's tokens of the chunks a few affix shapes settle without spaCy.

    spaCy splits a chunk only where its prefix, suffix or infix patterns match, or as a special case says.
    A chunk that is no special case and that none of the three patterns matches anywhere is one token
    (token_match and url_match can only keep a chunk whole, and the special-case matcher needs a special
    case equal to the chunk to act on a single token). Such a "plain" string is also where spaCy's affix
    loop (``_split_affixes`` in spacy/tokenizer.pyx) stops.

    The common other shapes peel one-character affixes off a core where the loop stops: "word," and "(word"
    (one step of the loop), "(word)" (prefix and suffix in the same step) and "word.)" (two steps). Each step
    is taken exactly as the loop takes it: the affix lengths are spaCy's own searches on the same strings,
    and what remains after each cut is checked not to be a special case (where the loop would stop
    differently). The core is then one token, or cut at its infixes as ``_attach_tokens`` cuts it (unless
    the URL matcher keeps it whole): "dm-raid", "(x/y)". The tokens are the affixes and the core's pieces
    unless a multi-token special case is some run of them (the matcher would act); anything else goes to
    spaCy.
    """

    def __init__(self, tokenizer, specials: set[str], patterns: set[tuple[str, ...]], pairs: set[tuple[str, str]]):
        self.tokenizer = tokenizer
        self.prefix = tokenizer.prefix_search or (lambda c: None)
        self.suffix = tokenizer.suffix_search or (lambda c: None)
        self.infix = tokenizer.infix_finditer or (lambda c: iter(()))
        self.token_match = tokenizer.token_match  # None when there is none: tested before each call
        self.url_match = tokenizer.url_match or _never
        self.specials, self.patterns, self.pairs = specials, patterns, pairs
        # a chunk holding none of the characters some affix rule needs is no match of any: one token
        untouchable = untouchable_characters(self.prefix, self.suffix, self.infix)
        self.quick = untouchable.isdisjoint if untouchable is not None else (lambda c: False)

    def split(self, chunks: list[str]) -> tuple[list[str], list[str], list[list[str]], list[str]]:
        """Chunks spaCy keeps whole; chunks split by a shape, with their tokens; the others (for spaCy)."""
        prefix, suffix, infix = self.prefix, self.suffix, self.infix
        suffix_length = getattr(suffix, "length", None) or (lambda text: _length(suffix(text)))
        token_match, url_match = self.token_match, self.url_match
        specials, patterns, pairs, quick = self.specials, self.patterns, self.pairs, self.quick

        def core(text: str) -> list[str] | None:
            """The tokens of a string where spaCy's affix loop stops (None: it would not stop there): one token,
            or its infix pieces as ``_attach_tokens`` cuts them."""
            if not text or text in specials or (token_match and token_match(text)):
                return None
            if quick(text):  # no affix rule matches: the loop stops with the string whole
                return [text]
            if prefix(text) is not None or suffix_length(text) >= 0:
                return None
            matches = list(infix(text))
            if not matches or url_match(text):
                return [text]
            pieces, start = [], 0
            for match in matches:
                first, end = match.start(), match.end()
                if first == 0:  # an infix at the very start does not cut
                    continue
                if first != start:
                    pieces.append(text[start:first])
                if first != end:
                    pieces.append(text[first:end])
                start = end
            if text[start:]:
                pieces.append(text[start:])
            return pieces

        def peeled(chunk: str, head, tail: int) -> list[str] | None:
            """``head``: the prefix match, ``tail``: the suffix match's length (-1: none, only looked at without
            a prefix match)."""
            if head is None and tail < 0:  # the loop stops at once
                return core(chunk)
            if head is not None:  # one prefix character, then a core or a one-character suffix and a core
                rest = chunk[1:]
                if _length(head) != 1 or not rest or rest in specials:
                    return None
                tail = suffix_length(rest)
                if tail < 0:
                    inside = core(rest)
                    return [chunk[0], *inside] if inside else None
                if tail != 1 or chunk[:-1] in specials:
                    return None
                inside = core(chunk[1:-1])
                return [chunk[0], *inside, chunk[-1]] if inside else None
            rest = chunk[:-1]  # one suffix character, then a core or one more suffix character and a core
            if tail != 1 or not rest or rest in specials:
                return None
            inside = core(rest)
            if inside:
                return [*inside, chunk[-1]]
            if (token_match and token_match(rest)) or prefix(rest) is not None or suffix_length(rest) != 1:
                return None
            inner = rest[:-1]
            inside = core(inner) if inner not in specials else None
            return [*inside, rest[-1], chunk[-1]] if inside else None

        simple, split, split_parts, rest = [], [], [], []
        for chunk in chunks:
            if chunk in specials or (token_match and token_match(chunk)):
                rest.append(chunk)
                continue
            if quick(chunk):
                simple.append(chunk)
                continue
            head = prefix(chunk)
            tail = suffix_length(chunk) if head is None else -1
            if head is None and tail < 0 and next(infix(chunk), None) is None:
                simple.append(chunk)
                continue
            parts = peeled(chunk, head, tail)
            if parts is None or (
                # a multi-token special case holds two consecutive tokens of some pattern: look only then
                not pairs.isdisjoint(zip(parts, parts[1:], strict=False))
                and any(
                    tuple(parts[i:j]) in patterns for i in range(len(parts)) for j in range(i + 2, len(parts) + 1)
                )
            ):
                rest.append(chunk)
                continue
            split.append(chunk)
            split_parts.append(parts)
        return simple, split, split_parts, rest
