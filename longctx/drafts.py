"""What the task generators share: the build context (tokenizer, haystacks, pools) and the draft of a sample.

A generator (`needle_tasks`, `aggregation_tasks`, `qa_task`) turns a task and a seeded random generator into a
`Draft`: the task text around the context, the haystack units in the order they are used, the needles and the
references. `sample.build_sample` then fits the draft to an exact token length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longctx.assemble import AssemblyError, ChatCounter, Insert, PromptForms, TextCounter, needed_units
from longctx.essays import load_essays
from longctx.haystack import Haystack, TokenizedUnits, load_haystack, noise_haystack, tokenize_units
from longctx.qa_data import QAData
from longctx.tasks import DISTRACTOR_POOL_TOKENS, NEEDLE
from longctx.words import Draws


@dataclass(frozen=True)
class Placement:
    """Where a generator puts things. The default suite places the first needle at a requested depth and cuts
    the context to an exact length; the RULER preset (`ruler_preset.RULER_PLACEMENT`) places as RULER does."""

    drawn_depths: bool = False  # needles at RULER's drawn depths: 40-point grid on essays, any line elsewhere
    spread_chains: bool = False  # vt's chain lines anywhere in the context, in order (not from the depth on)
    exact_lists: bool = False  # cwe/fwe: every word exactly as often as RULER says; the list is never cut
    whole_units: bool = False  # reach the length with whole units; token_count says what was built
    ruler_qa: bool = False  # question i of the file, RULER's distractors and gold-document position
    essay_from_start: bool = False  # the essays from their first sentence, as RULER reads them


DEFAULT_PLACEMENT = Placement()


class BuildContext:
    """What every sample of a suite shares: the tokenizer, counters, tokenized haystacks, word lists, QA data.

    Haystacks are tokenized once, on first use, and reused by every sample of the process.
    """

    def __init__(
        self,
        tok: Any,
        *,
        haystack: str | None = None,
        qa_data: dict[str, QAData] | None = None,
        text_field: str = "text",
        on_short_haystack: str = "repeat",
        max_haystack_chars: int | None = None,
        essays: str | None = None,
        cwe_words: str | None = None,
        placement: Placement = DEFAULT_PLACEMENT,
        seed: int = 42,
    ) -> None:
        if on_short_haystack not in ("repeat", "fail"):
            raise ValueError("on_short_haystack must be 'repeat' or 'fail'")
        self.tok = tok
        self.text = TextCounter(tok)
        self.chat = ChatCounter(tok) if tok.chat_template else None
        self.haystack_spec = haystack
        self.text_field = text_field
        self.on_short_haystack = on_short_haystack
        self.max_haystack_chars = max_haystack_chars
        self.qa_data = qa_data or {}
        self.essays = essays
        self.cwe_words = cwe_words
        self.placement = placement
        self.seed = seed
        self._haystacks: dict[str, tuple[Haystack, TokenizedUnits]] = {}
        self._qa_tokens: dict[str, np.ndarray] = {}
        self._distractors: dict[tuple[str, str], tuple[TokenizedUnits, list[str]]] = {}

    def distractors(self, type_k: str, type_v: str) -> tuple[TokenizedUnits, list[str]]:
        """RULER's needle haystack: a fixed pool of random needles (about 1.3M tokens), and their keys.

        The pool is seeded by the needle types alone, so every process builds the same one.
        """
        key = (type_k, type_v)
        if key not in self._distractors:
            seed = int.from_bytes(
                hashlib.sha256(f"distractors/{type_k}/{type_v}".encode()).digest()[:8], "little"
            )
            n = 1024
            while True:
                draws = Draws(np.random.default_rng(seed))
                keys, values = draws.draw(type_k, n), draws.draw(type_v, n)
                texts = [
                    NEEDLE.format(type_needle_v=type_v, key=k, value=v)
                    for k, v in zip(keys, values, strict=True)
                ]
                units = tokenize_units(self.tok, texts, "\n")
                total = int(units.counts.sum())
                if total >= DISTRACTOR_POOL_TOKENS:
                    break
                n = int(n * DISTRACTOR_POOL_TOKENS / max(total, 1) * 1.02) + 1
            self._distractors[key] = (units, keys)
        return self._distractors[key]

    def qa_document_tokens(self, task: str) -> np.ndarray:
        """Token counts of the QA documents of `task`, counted once."""
        if task not in self._qa_tokens:
            self._qa_tokens[task] = self.tok.count_batch(self.qa_data[task].documents)
        return self._qa_tokens[task]

    def haystack(self, kind: str) -> tuple[Haystack, TokenizedUnits]:
        """`noise` or `essay` as RULER names them, or the user's haystack when one was given."""
        spec = self.haystack_spec or kind
        if spec not in self._haystacks:
            if spec == "noise":
                hay = noise_haystack()
            elif spec == "essay" and (self.essays or self.placement.essay_from_start):
                hay = load_essays(self.essays, text_field=self.text_field)
            else:
                hay = load_haystack(spec, text_field=self.text_field, max_chars=self.max_haystack_chars)
            self._haystacks[spec] = (hay, tokenize_units(self.tok, hay.units, hay.sep))
        return self._haystacks[spec]

    def measure(self, prefix: str, suffix: str, answer_prefix: str) -> PromptForms:
        """The prompt's forms around a context (completion text, and chat when the tokenizer has a template);
        called with a context, the larger of their counts, so that one context fits both (the RULER preset)."""
        return PromptForms(self.tok, self.text, self.chat, prefix, suffix, answer_prefix)


@dataclass
class Draft:
    """A sample before assembly: task text around the context, haystack units, needles, references."""

    prefix: str
    suffix: str
    answer_prefix: str
    units: TokenizedUnits
    order: np.ndarray
    references: list[str]
    inserts: list[Insert] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    check: Any = None  # callable(used positions in `order`) -> references, when the answer depends on the cut
    reorderable: bool = True  # False for numbered units (cwe items, QA documents)
    depth: float | None = None  # where the sample's needle went, when the generator drew it (RULER preset)

    @classmethod
    def numbered(
        cls,
        prefix: str,
        suffix: str,
        answer_prefix: str,
        units: TokenizedUnits,
        references: list[str],
        **fields: Any,
    ) -> Draft:
        """A draft of numbered units (cwe items, QA documents): they stand in their own order and are never
        reordered to fit."""
        order = np.arange(len(units), dtype=np.int64)
        return cls(prefix, suffix, answer_prefix, units, order, references, reorderable=False, **fields)


def split_template(template: str, **values: Any) -> tuple[str, str]:
    before, after = template.split("{context}")
    return before.format(**values), after.format(**values)


def repeat_note(ctx: BuildContext, repeats: float, what: str) -> list[str]:
    if repeats <= 1.0:
        return []
    if ctx.on_short_haystack == "fail":
        raise AssemblyError(
            f"the {what} is too short for this length (it would be used {repeats:.2f} times); give a longer "
            "haystack or use --on-short-haystack repeat"
        )
    return [f"{what} repeated {repeats:.2f}x to reach the length"]


def fixed_haystack(ctx: BuildContext, kind: str, rng: np.random.Generator, target: int) -> tuple:
    hay, units = ctx.haystack(kind)
    start = 0 if len(units) == 1 else int(rng.integers(0, len(units)))
    if ctx.placement.essay_from_start and hay.name == "essay":
        start = 0  # RULER reads its essays from the first word on
    order, repeats = needed_units(units.counts, start, target)
    prov = dict(hay.provenance, start_unit=start)
    notes = [] if hay.provenance.get("kind") == "noise" else repeat_note(ctx, repeats, "haystack")
    return units, order, prov, notes


def generated_units(
    ctx: BuildContext, make: Any, sep: str, target: int, per_unit_guess: float
) -> tuple[TokenizedUnits, Any]:
    """Generate units with `make(n)` until they hold more than `target` tokens; tokenize them in one batch."""
    n = max(16, int(target / max(per_unit_guess, 0.5) * 1.08) + 16)
    while True:
        texts, state = make(n)
        units = tokenize_units(ctx.tok, texts, sep)
        total = int(units.offsets[-1])
        if total > target * 1.01 + 256:  # room for the tail search to move the cut forward
            return units, state
        n = int(n * max(1.2, (target + 64) / max(total, 1) * 1.06)) + 16


def probe_tokens_per_unit(ctx: BuildContext, texts: list[str], sep: str) -> float:
    """Tokens per unit, joined as in the prompt (seams included)."""
    return len(ctx.tok.encode(sep.join(texts))) / len(texts)


def largest_fitting(
    count: Callable[[int], int], guess: int, target: int, tokens_per_item: float, limit: int | None = None
) -> int:
    """The largest item count `n` (at least 1, at most `limit`) whose prompt counts at most `target` tokens,
    from a guess; `count(n)` builds and counts the prompt (nearly linear in `n`). Steps by the tokens missing
    until the answer is bracketed, then interpolates between the two sides: a few full counts, where RULER's
    search needs many."""
    per = max(tokens_per_item, 0.5)
    top = limit if limit is not None else 1 << 40
    seen: dict[int, int] = {}
    fits = 0  # largest n known to fit
    too_long: int | None = None  # smallest n known not to
    n = min(max(1, guess), top)
    for _ in range(64):
        if n not in seen:
            seen[n] = count(n)
        if seen[n] <= target:
            fits = max(fits, n)
        else:
            too_long = n if too_long is None else min(too_long, n)
        if fits == top or (too_long is not None and too_long == fits + 1):
            return fits
        if too_long == 1:
            break
        if fits and too_long is not None:  # interpolate inside the bracket, never on its ends
            lo, hi = seen[fits], seen[too_long]
            step = int((target - lo) * (too_long - fits) / max(hi - lo, 1))
            n = min(too_long - 1, max(fits + 1, fits + step))
        else:
            if len(seen) > 1:  # the slope of the last two counts, once there are two
                a, b = sorted(seen, key=lambda k: abs(k - n))[:2]
                per = max(0.5, (seen[a] - seen[b]) / (a - b)) if a != b else per
            if too_long is None:
                n = min(top, n + max(1, round((target - seen[n]) / per)))
            else:
                n = max(1, n - max(1, round((seen[n] - target) / per)))
    if not fits:
        raise AssemblyError(f"{target} tokens is too short for even one item")
    return fits
