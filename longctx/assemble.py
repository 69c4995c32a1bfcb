"""Exact-length assembly: a prompt of exactly `target` tokens from a task's text, haystack units and needles.

RULER searches over the number of haystack sentences and re-tokenizes the whole prompt at every step, landing
within a few hundred tokens of the length. Here everything happens in token space instead:

1. the haystack units are tokenized once (`haystack.tokenize_units`), in the separator placement for which their
   counts add up; cumulative counts (numpy) give, for any haystack budget, how many whole units fit and how many
   tokens of the next unit are needed (that unit is cut by tokens: its ids are truncated and decoded);
2. needles go on the unit boundary nearest to their depth, by cumulative token counts;
3. the rendered prompt is encoded once in full. Merges at the seams (prefix, needles, suffix) can make the count
   differ from the estimate by a few tokens; the difference is corrected in the tail of the context only,
   re-encoding just that tail, and the result is verified with one more full encode. A count that cannot be hit
   exactly is an error, never a silent near miss.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longctx.haystack import TokenizedUnits


class AssemblyError(ValueError):
    """A prompt that cannot be built at the requested length (too short, or too little haystack)."""


class TextCounter:
    """Token counts of plain text, as the tokenizer encodes it (special-token strings stay text)."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def count(self, text: str) -> int:
        return len(self.tok.encode(text))

    def count_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, np.int64)
        return self.tok.count_batch(list(texts))


class ChatCounter(TextCounter):
    """Token counts of a rendered chat prompt: special-token strings of the template count as one token each.

    This is how a server tokenizes what the chat template renders. The text between special tokens goes
    through the same fast encoder as plain text (special tokens are hard boundaries for the tokenizer).
    """

    def __init__(self, tok: Any) -> None:
        super().__init__(tok)
        specials = sorted(getattr(tok, "special_tokens", {}) or {}, key=len, reverse=True)
        self._split = re.compile("|".join(re.escape(s) for s in specials)) if specials else None

    def _parts(self, text: str) -> tuple[list[str], int]:
        if self._split is None:
            return [text], 0
        chunks = self._split.split(text)
        return [c for c in chunks if c], len(chunks) - 1

    def count(self, text: str) -> int:
        chunks, specials = self._parts(text)
        return int(self.tok.count_batch(chunks).sum()) + specials if chunks else specials

    def count_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.count(t) for t in texts), dtype=np.int64, count=len(texts))


@dataclass
class Insert:
    """Text placed between haystack units at `depth` percent (0-100) of the haystack tokens."""

    text: str
    depth: float


@dataclass
class Fit:
    """An assembled prompt and where its parts landed."""

    text: str
    token_count: int
    context: str
    haystack_tokens: int
    whole_units: int
    partial_tokens: int
    used: np.ndarray
    insert_depths: list[float] = field(default_factory=list)
    full_encodes: int = 0
    form_counts: tuple[int, ...] = ()  # whole-unit fits: the count of each prompt form (completion, chat)


def needed_units(counts: np.ndarray, start: int, tokens: int) -> tuple[np.ndarray, float]:
    """Unit indices from `start` onward, cycling through the haystack, that hold more than `tokens` tokens.

    Returns the indices and how many times the haystack was used (1.0 = each unit at most once).
    """
    total = int(counts.sum())
    if total <= 0:
        raise AssemblyError("the haystack has no tokens")
    n_units = len(counts)
    order_counts = np.roll(counts, -start)
    tokens = int(tokens * 1.02) + 1024  # room for the tail search to move the cut
    cycles = tokens // total + 1
    cum = np.cumsum(np.tile(order_counts, cycles + 1))
    m = int(np.searchsorted(cum, tokens, side="right")) + 2
    idx = (start + np.arange(m, dtype=np.int64)) % n_units
    return idx, m / n_units


# Ways to end the context, tried when the plain cut cannot hit the count: (skip, trim, swap) =
# take the partial unit from the skip-th later unit long enough; cut `trim` tokens off the last whole unit;
# put in place of the last whole unit the swap-th later unit that ends with another character (swap > 0),
# or exchange it with the |swap|-th earlier such unit (swap < 0, which keeps the same units and tokens).
# Skip and swap reorder filler, so they are only used when the units may be reordered.
ENDINGS = [
    (0, 0, 0),
    (1, 0, 0),
    (2, 0, 0),
    (0, 0, -1),
    (0, 0, -2),
    (0, 0, 1),
    (0, 0, 2),
    (0, 1, 0),
    (0, 2, 0),
    (0, 3, 0),
    (1, 0, -1),
    (1, 1, 0),
    (0, 1, 1),
    (0, 0, -3),
    (0, 0, 3),
]
FIXED_ORDER_ENDINGS = [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (0, 4, 0), (0, 5, 0)]


class _Layout:
    """Renders a prompt for a haystack cut at token position `x` (whole units, then a partial unit)."""

    def __init__(
        self,
        tok: Any,
        units: TokenizedUnits,
        order: np.ndarray,
        prefix: str,
        suffix: str,
        inserts: Sequence[Insert],
        reorderable: bool = True,
    ) -> None:
        self.tok = tok
        self.variants = ENDINGS if reorderable else FIXED_ORDER_ENDINGS
        self.units = units
        self.order = order
        self.prefix = prefix
        self.suffix = suffix
        self.inserts = list(inserts)
        self.counts = units.counts[order]
        self.cum = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.cum[1:])
        self.positions: list[int] = []
        self._partials: dict[tuple[int, int], str] = {}

    def locate(self, x: int) -> tuple[int, int]:
        n = int(np.searchsorted(self.cum, x, side="right")) - 1
        if n >= len(self.order) and x > int(self.cum[-1]):
            raise AssemblyError(f"the haystack ran out at {int(self.cum[-1])} tokens ({x} needed)")
        return n, x - int(self.cum[n])

    def place_inserts(self, x: int) -> None:
        """Put each insert on the unit boundary nearest to its depth (boundaries 0..n, n = whole units)."""
        n, _ = self.locate(x)
        bounds = self.cum[: n + 1]
        self.positions = []
        for ins in self.inserts:
            want = ins.depth / 100.0 * x
            i = int(np.searchsorted(bounds, want))
            if i > n or (i > 0 and abs(bounds[i - 1] - want) <= abs(bounds[i] - want)):
                i -= 1
            self.positions.append(max(0, min(i, n)))

    def _partial(self, unit: int, k: int) -> str:
        key = (unit, k)
        if key not in self._partials:
            ids = self.units.own_ids(self.tok, unit)[:k]
            text = self.tok.decode(ids)
            # A cut inside a multi-byte character decodes to U+FFFD; cut before that character instead.
            while "\ufffd" in text and "\ufffd" not in self.units.texts[unit] and len(ids) > 0:
                ids = ids[:-1]
                text = self.tok.decode(ids)
            self._partials[key] = text
        return self._partials[key]

    def _ending(self, n: int, k: int, variant: int) -> tuple[int, int, dict[int, int]]:
        """(position of the partial unit, tokens trimmed off the last whole unit, positions shown in place of
        other positions)."""
        skip, trim, swap = self.variants[variant]
        partial_at = n
        if skip:
            if k == 0:
                raise AssemblyError("no partial unit to move")
            longer = np.flatnonzero(self.counts[n + 1 : n + 256] > k)
            if len(longer) < skip:
                raise AssemblyError(f"no unit after unit {n} is longer than {k} tokens")
            partial_at = n + 1 + int(longer[skip - 1])
        if trim and (n < 1 or self.counts[n - 1] <= trim + 1):
            raise AssemblyError("the last whole unit is too short to trim")
        shown: dict[int, int] = {}
        if swap:
            if n < 1:
                raise AssemblyError("no whole unit to swap")
            texts, order = self.units.texts, self.order
            last = texts[order[n - 1]][-1:]
            if swap > 0:  # a later unit stands in for the last whole one
                cands = (j for j in range(n + 1, min(n + 1024, len(order))) if j != partial_at)
            else:  # the last whole unit changes places with an earlier one
                cands = iter(range(n - 2, max(-1, n - 66), -1))
            cands = (j for j in cands if texts[order[j]][-1:] != last)
            other = next(itertools.islice(cands, abs(swap) - 1, None), -1)
            if other < 0:
                raise AssemblyError("no unit to swap in")
            shown[n - 1] = other
            if swap < 0:
                shown[other] = n - 1
        return partial_at, trim, shown

    def used(self, x: int, variant: int = 0) -> np.ndarray:
        """Positions in `order` of the units that appear whole in the context (in no particular order)."""
        n, k = self.locate(x)
        _, trim, shown = self._ending(n, k, variant)
        pos = np.arange(n, dtype=np.int64)
        for i, j in shown.items():
            pos[i] = j
        return pos[:-1] if n and trim else pos

    def pieces(self, x: int, start: int = 0, variant: int = 0, stop: int | None = None) -> list[str]:
        """Context pieces from unit boundary `start` on (inserts at `start` included), separators attached.

        `variant` picks one of a few ways to end the context (see `ENDINGS`), for when a cut merges with the
        text after it so that the count skips the value wanted. `stop` ends the pieces before boundary `stop`
        (the units and inserts before it only, for the head of a long context).
        """
        n, k = self.locate(x)
        if stop is not None:
            n, k, variant = min(stop, n), 0, 0
        partial_at, trim, shown = self._ending(n, k, variant)
        if any(i < start for i in shown):
            raise AssemblyError("a swapped unit lies before the re-encoded tail")
        units = self.units
        sep = units.sep
        before = units.form == "before"
        texts = units.texts
        order = self.order
        idx = order[start:n].tolist()
        for i, j in shown.items():
            idx[i - start] = int(order[j])
        # One comprehension over the units (the bulk), then the few inserts and the trimmed unit by position.
        out = [sep + texts[u] for u in idx] if before else [texts[u] + sep for u in idx]
        if trim and n - 1 >= start:
            t = self._partial(int(order[n - 1]), int(self.counts[n - 1]) - trim)
            out[n - 1 - start] = t if before or t.endswith(sep) else t + sep
        last = n if stop is None else n - 1  # inserts on boundary n go after the whole units
        placed = sorted(
            ((min(p, n), j) for j, p in enumerate(self.positions) if start <= min(p, n) <= last), reverse=True
        )
        for p, j in placed:
            t = self.inserts[j].text
            out.insert(p - start, sep + t if before else t + sep)
        if stop is not None:
            pass
        elif k > 0:
            out.append(self._partial(int(order[partial_at]), k))
        elif out and not before and start <= n:
            out[-1] = out[-1][: len(out[-1]) - len(sep)] if sep else out[-1]
        if before and start == 0 and out and sep and out[0].startswith(sep):
            out[0] = out[0][len(sep) :]
        return out

    def context(self, x: int, variant: int = 0) -> str:
        return "".join(self.pieces(x, 0, variant))

    def tail(self, x: int, start: int, variant: int = 0) -> str:
        return "".join(self.pieces(x, start, variant)) + self.suffix

    def depths(self, x: int) -> list[float]:
        n, _ = self.locate(x)
        return [round(100.0 * float(self.cum[min(p, n)]) / max(x, 1), 2) for p in self.positions]


def fit_exact(
    tok: Any,
    *,
    counter: TextCounter,
    prefix: str,
    suffix: str,
    units: TokenizedUnits,
    order: np.ndarray,
    inserts: Sequence[Insert] = (),
    target: int,
    reorderable: bool = True,
    max_rounds: int = 6,
) -> Fit:
    """Build `prefix + context + suffix` of exactly `target` tokens (as `counter` counts them).

    `order` lists the haystack unit indices in the order they are used (long enough to cover the budget,
    see `needed_units`); inserts land on unit boundaries at their depths. `reorderable` says whether the
    units are interchangeable filler (a numbered list is not).
    """
    layout = _Layout(tok, units, order, prefix, suffix, inserts, reorderable)
    sep = units.sep
    fixed = counter.count(prefix) + counter.count(suffix)
    insert_tokens = np.zeros(len(inserts), dtype=np.int64)
    if inserts:
        forms = [sep + i.text if units.form == "before" else i.text + sep for i in inserts]
        insert_tokens = counter.count_batch(forms)
        fixed += int(insert_tokens.sum())
    x = target - fixed
    if x < 0:
        raise AssemblyError(f"{target} tokens is too short: the task text alone takes {fixed} tokens")
    if x >= int(layout.cum[-1]):
        raise AssemblyError(f"the haystack ran out at {int(layout.cum[-1])} tokens ({x} needed)")
    layout.place_inserts(x)
    variant = 0
    n, _ = layout.locate(x)
    if n > 16:
        # Count the seams at both ends for real before the first full encode, so that it usually hits.
        h = n - 4
        head = counter.count(prefix + "".join(layout.pieces(x, 0, stop=2)))
        middle = int(layout.cum[h] - layout.cum[2])
        middle += sum(int(t) for t, p in zip(insert_tokens, layout.positions, strict=True) if 2 <= p < h)
        estimate = head + middle + counter.count(layout.tail(x, h))
        if estimate != target:
            x, variant = _correct_tail(layout, counter, x, 0, estimate, target, 4)
    context = layout.context(x, variant)
    actual = counter.count(prefix + context + suffix)
    encodes = 1
    back = 4
    rounds = 0
    while actual != target:
        rounds += 1
        if rounds > max_rounds:
            raise AssemblyError(
                f"could not reach exactly {target} tokens (last try: {actual}) after {max_rounds} rounds"
            )
        x, variant = _correct_tail(layout, counter, x, variant, actual, target, back)
        context = layout.context(x, variant)
        actual = counter.count(prefix + context + suffix)
        encodes += 1
        back *= 4
    n, k = layout.locate(x)
    return Fit(
        text=prefix + context + suffix,
        token_count=actual,
        context=context,
        haystack_tokens=x,
        whole_units=n,
        partial_tokens=k,
        used=layout.used(x, variant),
        insert_depths=layout.depths(x),
        full_encodes=encodes,
    )


def _correct_tail(
    layout: _Layout, counter: TextCounter, x: int, variant: int, actual: int, target: int, back: int
) -> tuple[int, int]:
    """A new cut (position, variant) whose prompt should count exactly `target`, re-encoding only the tail.

    The text up to a unit boundary `h` well before the cut stays as it is, so its count (`actual` minus the
    tail's) stays too; the search moves the cut until the tail has the tokens that remain. A cut inside a unit
    can merge with the text after it, so that the count skips the value wanted; after a few Newton steps the
    search scans outward from the estimate, nearest positions first, through the variants of the ending.
    """
    miss = target - actual
    h = max(0, int(np.searchsorted(layout.cum, x - 2 * abs(miss) - 64 * back, side="right")) - 1)
    head = actual - counter.count(layout.tail(x, h, variant))
    need = target - head
    lo, hi = int(layout.cum[h]) + 1, int(layout.cum[-1]) - 1
    tried: dict[tuple[int, int], int] = {}

    def hits(g: int, v: int) -> bool:
        if (g, v) not in tried:
            try:
                tried[g, v] = counter.count(layout.tail(g, h, v))
            except AssemblyError:
                tried[g, v] = -1
        return tried[g, v] == need

    guess = x + miss
    for _ in range(8):
        if not lo <= guess <= hi:
            break
        if hits(guess, 0):
            return guess, 0
        nxt = guess + (need - tried[guess, 0])
        if (nxt, 0) in tried:
            break
        guess = nxt
    center = min(max(guess, lo), hi)
    for d in range(0, 16 * back):
        for g in (center + d, center - d):
            for v in range(len(layout.variants)):
                if lo <= g <= hi and hits(g, v):
                    return g, v
    if x + miss > hi:
        raise AssemblyError(f"the haystack ran out at {hi + 1} tokens ({x + miss} needed)")
    raise AssemblyError(f"no cut of the haystack near {x} tokens gives exactly {target} tokens")


class PromptForms:
    """The forms a prompt is sent in around its context: the completion text (prefix, context, suffix, answer
    prefix) and, with a chat counter, the rendered chat. Counts are per form; calling it gives the largest."""

    def __init__(
        self,
        tok: Any,
        text: TextCounter,
        chat: TextCounter | None,
        prefix: str,
        suffix: str,
        answer_prefix: str,
    ) -> None:
        self.forms: list[tuple[TextCounter, str, str]] = [(text, prefix, suffix + answer_prefix)]
        if chat is not None:
            head, tail = chat_frame(tok, answer_prefix)
            self.forms.append((chat, head + prefix, suffix + tail))

    def counts(self, context: str) -> tuple[int, ...]:
        return tuple(counter.count(before + context + after) for counter, before, after in self.forms)

    def tail_counts(self, tail: str) -> tuple[int, ...]:
        """Counts of the end of a context with what follows it in each form."""
        return tuple(counter.count(tail + after) for counter, _, after in self.forms)

    def __call__(self, context: str) -> int:
        return max(self.counts(context))


def fit_whole_units(
    tok: Any,
    *,
    measure: PromptForms,
    units: TokenizedUnits,
    order: np.ndarray,
    inserts: Sequence[Insert] = (),
    target: int,
    max_rounds: int = 12,
) -> Fit:
    """The most whole units of `order` whose context fits `target` tokens in every form; no unit is cut.

    This is RULER's way to reach a length (as many whole sentences, lines or documents as fit), used by the
    RULER preset; `token_count` is the largest form's count and `form_counts` each form's. Each insert goes to
    boundary `int(n * depth / 100)` of the `n` units used, as RULER places its needles by sentence or line
    count. Whether one more unit fits is decided from the tail of the context alone (re-encoding a few units),
    and every count that is kept comes from a full encode.
    """
    layout = _Layout(tok, units, order, "", "", inserts, reorderable=False)
    cum = layout.cum
    total_units = len(order)

    def place(n: int) -> None:
        layout.positions = [min(n, int(n * ins.depth / 100.0)) for ins in inserts]

    def render(n: int) -> str:
        place(n)
        return layout.context(int(cum[n]))

    counts: dict[int, tuple[int, ...]] = {}

    def count(n: int) -> int:
        if n not in counts:
            counts[n] = measure.counts(render(n))
        return max(counts[n])

    def next_fits(n: int) -> bool:
        """Whether n + 1 units fit: the full count of n, less its tail's, plus the tail's with one unit more."""
        start = max(0, n - 4)
        tails = []
        for m in (n, n + 1):
            place(m)
            tails.append(measure.tail_counts("".join(layout.pieces(int(cum[m]), start))))
        return max(c - a + b for c, a, b in zip(counts[n], tails[0], tails[1], strict=True)) <= target

    fixed = count(0)
    if fixed > target:
        raise AssemblyError(f"{target} tokens is too short: the task text alone takes {fixed} tokens")
    n = min(total_units, max(0, int(np.searchsorted(cum, target - fixed, side="right")) - 1))
    mean_unit = max(1.0, float(cum[-1]) / max(total_units, 1))
    for _ in range(max_rounds):
        over = count(n) - target
        if over > 0:
            n = max(0, n - max(1, int(over / mean_unit)))
            continue
        if n == total_units or not next_fits(n):
            break
        n = min(total_units, n + max(1, int(-over / mean_unit) - 1))
    else:
        raise AssemblyError(f"no whole number of units near {n} fits in {target} tokens")
    if n == total_units and total_units and cum[-1] + fixed < target * 0.9:
        raise AssemblyError(f"the haystack ran out at {int(cum[-1])} tokens ({target - fixed} wanted)")
    context = render(n)
    return Fit(
        text=context,
        token_count=count(n),
        context=context,
        haystack_tokens=int(cum[n]),
        whole_units=n,
        partial_tokens=0,
        used=np.arange(n, dtype=np.int64),
        insert_depths=[round(100.0 * float(cum[p]) / max(int(cum[n]), 1), 2) for p in layout.positions],
        full_encodes=len(counts),
        form_counts=counts[n],
    )


_PLACEHOLDER = "\x00LONGCTX-CONTENT\x00"


def chat_frame(tok: Any, answer_prefix: str) -> tuple[str, str]:
    """The chat template's text before and after the user's content, ending with the answer prefix.

    The conversation is the user's prompt and an assistant message holding the answer prefix, rendered the way
    transformers renders `continue_final_message=True` (cut right after the final message), which is what a
    server sends when it continues the prefix.
    """
    messages = [{"role": "user", "content": _PLACEHOLDER}, {"role": "assistant", "content": answer_prefix}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=False)
    rendered = continue_final(rendered, answer_prefix)
    if rendered.count(_PLACEHOLDER) != 1:
        raise AssemblyError("the chat template does not render the user's content verbatim")
    head, tail = rendered.split(_PLACEHOLDER)
    return head, tail


def continue_final(rendered: str, final: str) -> str:
    """Cut a rendered chat after its final message, as transformers does for continue_final_message."""
    if not final.strip():
        return rendered
    if final.strip() not in rendered:
        raise AssemblyError("the chat template does not render the assistant's answer prefix")
    loc = rendered.rindex(final.strip())
    if rendered[loc : loc + len(final.lstrip())] == final:
        return rendered[: loc + len(final.lstrip())]
    return rendered[: loc + len(final.strip())]
