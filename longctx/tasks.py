"""RULER's 13 tasks as small seeded generators, each producing one sample at an exact token length.

Task names, templates, answer prefixes, needle wording and answer budgets (`max_new_tokens`) follow RULER
(NVIDIA/RULER, scripts/synthetic.yaml and scripts/data/synthetic/constants.py). What differs, and why:

- the haystack is cut to an exact token count (see `longctx.assemble`) instead of a binary search over the
  number of sentences;
- the needle (or first variable assignment, or gold document) is placed at a requested depth; the other needles
  go to seeded random depths, as RULER places all of them;
- every random choice comes from one numpy Generator seeded per sample.
"""

from __future__ import annotations

import hashlib
import json
import string
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from longctx.assemble import AssemblyError, ChatCounter, Insert, TextCounter, fit_exact, needed_units
from longctx.haystack import Haystack, TokenizedUnits, load_haystack, noise_haystack, tokenize_units

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_ANSWER = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER = " Answer: According to the coded text above, the three most frequently appeared words are:"
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
)
QA_ANSWER = " Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"

# RULER's answer budgets (tokens_to_generate) per task family; also the `reserve` of every sample.
MAX_NEW_TOKENS = {
    "niah": 128,
    "variable_tracking": 30,
    "common_words_extraction": 120,
    "freq_words_extraction": 50,
    "qa": 32,
}
METRICS = {
    "niah": "string_match_all",
    "variable_tracking": "string_match_all",
    "common_words_extraction": "string_match_all",
    "freq_words_extraction": "string_match_all",
    "qa": "string_match_part",
}


@dataclass(frozen=True)
class TaskSpec:
    """One RULER task: its family (`kind`), arguments, and answer budget."""

    name: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        return MAX_NEW_TOKENS[self.kind]

    @property
    def metric(self) -> str:
        return METRICS[self.kind]

    @property
    def uses_depth(self) -> bool:
        return self.kind in ("niah", "variable_tracking", "qa")


def _niah(hay: str, k: str, v: str, nk: int = 1, nv: int = 1, nq: int = 1) -> dict[str, Any]:
    return {
        "type_haystack": hay,
        "type_needle_k": k,
        "type_needle_v": v,
        "num_needle_k": nk,
        "num_needle_v": nv,
        "num_needle_q": nq,
    }


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("niah_single_1", "niah", _niah("noise", "words", "numbers")),
        TaskSpec("niah_single_2", "niah", _niah("essay", "words", "numbers")),
        TaskSpec("niah_single_3", "niah", _niah("essay", "words", "uuids")),
        TaskSpec("niah_multikey_1", "niah", _niah("essay", "words", "numbers", nk=4)),
        TaskSpec("niah_multikey_2", "niah", _niah("needle", "words", "numbers")),
        TaskSpec("niah_multikey_3", "niah", _niah("needle", "uuids", "uuids")),
        TaskSpec("niah_multivalue", "niah", _niah("essay", "words", "numbers", nv=4)),
        TaskSpec("niah_multiquery", "niah", _niah("essay", "words", "numbers", nq=4)),
        TaskSpec("vt", "variable_tracking", {"type_haystack": "noise", "num_chains": 1, "num_hops": 4}),
        TaskSpec("cwe", "common_words_extraction", {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10}),
        TaskSpec("fwe", "freq_words_extraction", {"alpha": 2.0, "coded_wordlen": 6}),
        TaskSpec("qa_1", "qa", {"dataset": "squad"}),
        TaskSpec("qa_2", "qa", {"dataset": "hotpotqa"}),
    ]
}
QA_TASKS = ("qa_1", "qa_2")
DISTRACTOR_POOL_TOKENS = (
    1_300_000  # the distractor pool of niah_multikey_2/3 covers 1M tokens without repeats
)
# RULER's needle depths: 40 points from 0 to 100 percent.
RULER_DEPTHS = np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)


def parse_length(text: str | int) -> int:
    """`4k` -> 4096, `1m` -> 1048576 (powers of two), or a plain integer."""
    if isinstance(text, int):
        return text
    t = text.strip().lower()
    scale = {"k": 1 << 10, "m": 1 << 20}.get(t[-1:], 1)
    digits = t[:-1] if scale > 1 else t
    try:
        value = int(float(digits) * scale)
    except ValueError as exc:
        raise ValueError(f"length {text!r}: expected an integer or a size like 4k, 128k, 1m") from exc
    if value <= 0:
        raise ValueError(f"length {text!r} must be positive")
    return value


def format_length(n: int) -> str:
    """The inverse of `parse_length` for powers of two (file names like 128k.jsonl)."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}m"
    if n % (1 << 10) == 0:
        return f"{n >> 10}k"
    return str(n)


# ---------------------------------------------------------------------------------------------- word lists
@lru_cache(maxsize=1)
def _wonderwords() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
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
    nouns, adjs, verbs = _wonderwords()
    return tuple(sorted(set(nouns) | set(adjs) | set(verbs)))


class Draws:
    """Seeded random values of RULER's kinds: 7-digit numbers, adjective-noun words, uuids, variable names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        nouns, adjs, _ = _wonderwords()
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


# ---------------------------------------------------------------------------------------------- QA data
@dataclass
class QAData:
    """Questions with their gold documents, and the pool of all documents (distractors are the others)."""

    path: str
    questions: list[dict[str, Any]]
    documents: list[str]


def load_qa(path: str | Path) -> QAData:
    """JSONL of {context, question, answers}; `context` is a string or a list of strings (several gold docs)."""
    path = Path(path)
    records: list[tuple[list[str], str, list[str]]] = []
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the QA data ({exc})") from exc
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected an object with context, question, answers")
            ctx, question, answers = rec.get("context"), rec.get("question"), rec.get("answers")
            if isinstance(ctx, str):
                ctx = [ctx]
            if not (isinstance(ctx, list) and ctx and all(isinstance(c, str) and c.strip() for c in ctx)):
                raise ValueError(
                    f"{path}:{lineno}: field 'context' must be a non-empty string or list of strings"
                )
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"{path}:{lineno}: field 'question' must be a non-empty string")
            if isinstance(answers, str):
                answers = [answers]
            if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
                raise ValueError(f"{path}:{lineno}: field 'answers' must be a non-empty list of strings")
            records.append(([c.strip() for c in ctx], question.strip(), answers))
    if not records:
        raise ValueError(f"{path}: no QA records")
    documents = sorted({c for ctx, _, _ in records for c in ctx})
    index = {d: i for i, d in enumerate(documents)}
    questions = [{"question": q, "answers": a, "gold": [index[c] for c in ctx]} for ctx, q, a in records]
    return QAData(path=path.name, questions=questions, documents=documents)


# ---------------------------------------------------------------------------------------------- build context
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
            hay = (
                noise_haystack()
                if spec == "noise"
                else load_haystack(spec, text_field=self.text_field, max_chars=self.max_haystack_chars)
            )
            self._haystacks[spec] = (hay, tokenize_units(self.tok, hay.units, hay.sep))
        return self._haystacks[spec]


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


def _split_template(template: str, **values: Any) -> tuple[str, str]:
    before, after = template.split("{context}")
    return before.format(**values), after.format(**values)


def _repeat_note(ctx: BuildContext, repeats: float, what: str) -> list[str]:
    if repeats <= 1.0:
        return []
    if ctx.on_short_haystack == "fail":
        raise AssemblyError(
            f"the {what} is too short for this length (it would be used {repeats:.2f} times); give a longer "
            "haystack or use --on-short-haystack repeat"
        )
    return [f"{what} repeated {repeats:.2f}x to reach the length"]


def _fixed_haystack(ctx: BuildContext, kind: str, rng: np.random.Generator, target: int) -> tuple:
    hay, units = ctx.haystack(kind)
    start = 0 if len(units) == 1 else int(rng.integers(0, len(units)))
    order, repeats = needed_units(units.counts, start, target)
    prov = dict(hay.provenance, start_unit=start)
    notes = [] if hay.provenance.get("kind") == "noise" else _repeat_note(ctx, repeats, "haystack")
    return units, order, prov, notes


def _generated_units(
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


def _probe(ctx: BuildContext, texts: list[str], sep: str) -> float:
    """Tokens per unit, joined as in the prompt (seams included)."""
    return len(ctx.tok.encode(sep.join(texts))) / len(texts)


def _depths(rng: np.random.Generator, n: int) -> list[float]:
    return [float(d) for d in rng.choice(RULER_DEPTHS, size=n, replace=n > len(RULER_DEPTHS))]


def draft_niah(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator
) -> Draft:
    a = spec.args
    nk, nv, nq = max(a["num_needle_k"], a["num_needle_q"]), a["num_needle_v"], a["num_needle_q"]
    tk, tv = a["type_needle_k"], a["type_needle_v"]
    draws = Draws(rng)
    keys = draws.distinct(tk, nk)
    values = [draws.distinct(tv, nv) for _ in range(nk)]
    needles = [
        (ki, NEEDLE.format(type_needle_v=tv, key=keys[ki], value=v)) for ki in range(nk) for v in values[ki]
    ]
    needles = [needles[i] for i in rng.permutation(len(needles))]
    queried = sorted(rng.choice(nk, size=nq, replace=False).tolist())
    queries = [keys[i] for i in queried]
    references = [v for i in queried for v in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template, answer = NIAH_TEMPLATE, NIAH_ANSWER
    type_v = tv
    if nq * nv == 1:  # RULER's singular wording for one answer
        template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
        answer = answer.replace("are", "is")
        type_v = tv[:-1]
    prefix, suffix = _split_template(template, type_needle_v=type_v, query=query)
    answer_prefix = answer.format(type_needle_v=type_v, query=query)
    # The first needle of a queried key goes to the requested depth; the others to RULER's random depths.
    depths = _depths(rng, len(needles))
    first = next(i for i, (ki, _) in enumerate(needles) if ki in queried)
    depths[first] = float(depth)
    inserts = sorted(
        (Insert(text, d) for (_, text), d in zip(needles, depths, strict=True)), key=lambda i: i.depth
    )
    notes: list[str] = []
    if a["type_haystack"] == "needle":
        # Distractor needles come from a pool tokenized once per process; each sample starts at its own
        # place in it and leaves out any distractor that shares a key with its needles.
        units, pool_keys = ctx.distractors(tk, tv)
        start = int(rng.integers(0, len(units)))
        order, repeats = needed_units(units.counts, start, target)
        clash = np.flatnonzero(np.isin(np.asarray(pool_keys, dtype=object), keys))
        if len(clash):
            order = order[~np.isin(order, clash)]
        prov = {"source": "needle", "kind": "distractor needles", "pool": len(units), "start_unit": start}
        if repeats > 1:
            notes = [f"distractor needles repeated {repeats:.2f}x to reach the length"]
    else:
        units, order, prov, notes = _fixed_haystack(ctx, a["type_haystack"], rng, target)
    return Draft(
        prefix,
        suffix,
        answer_prefix,
        units,
        order,
        references,
        inserts,
        prov,
        notes,
        extra={"needles": [text for _, text in needles], "queries": queries},
    )


def draft_vt(ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator) -> Draft:
    a = spec.args
    chains_n, hops = a["num_chains"], a["num_hops"]
    draws = Draws(rng)

    def chains(k: int, value: str | None = None) -> tuple[list[list[str]], list[list[str]], str]:
        names = draws.letters(chains_n * (hops + 1), k)
        var_sets = [names[i : i + hops + 1] for i in range(0, len(names), hops + 1)]
        out = []
        for vs in var_sets:
            v0 = value or str(int(rng.integers(10000, 99999)))
            out.append([f"VAR {vs[0]} = {v0}"] + [f"VAR {vs[j + 1]} = VAR {vs[j]} " for j in range(hops)])
        return var_sets, out, out[0][0].split("=")[-1].strip()

    # The in-context example RULER puts before the task: a short chain in 20 noise lines, with its answer.
    ex_vars, ex_chains, ex_value = chains(3)
    lines = [noise_haystack().units[0]] * 20
    positions = sorted(rng.choice(len(lines), size=len(ex_chains[0]), replace=False).tolist())
    for j, p in enumerate(positions):
        lines.insert(p + j, ex_chains[0][j])
    example = VT_TEMPLATE.format(context="\n".join(lines), query=ex_value)
    example += VT_ANSWER.format(num_v=hops + 1, query=ex_value) + " " + " ".join(ex_vars[0]) + "\n"

    var_sets, chain_list, value = chains(5)
    # Chains interleave in random order, each keeping its own order (RULER's shuffle_sublists_heap).
    pending = [list(c) for c in chain_list]
    flat: list[str] = []
    while any(pending):
        live = [i for i, c in enumerate(pending) if c]
        flat.append(pending[live[int(rng.integers(0, len(live)))]].pop(0))
    hay_kind = a["type_haystack"]
    units, order, prov, notes = _fixed_haystack(ctx, hay_kind, rng, target)
    newline_haystack = units.sep == "\n"
    texts = flat if newline_haystack else [s.strip() + "." for s in flat]
    rest = sorted(float(d) for d in rng.uniform(depth, 100.0, size=len(texts) - 1))
    inserts = [Insert(t, d) for t, d in zip(texts, [float(depth), *rest], strict=True)]
    prefix, suffix = _split_template(VT_TEMPLATE, query=value)
    answer_prefix = VT_ANSWER.format(num_v=hops + 1, query=value)
    return Draft(
        example + "\n" + prefix,
        suffix,
        answer_prefix,
        units,
        order,
        list(var_sets[0]),
        inserts,
        prov,
        notes,
        extra={"chain": flat},
    )


def _cwe_words(rng: np.random.Generator, n: int) -> list[str]:
    pool = list(common_word_pool())
    if n <= len(pool):
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    # More words than RULER's list holds (RULER then falls back to a large English word list that is not
    # available offline): the whole list, then distinct adjective-noun words.
    words = [pool[i] for i in rng.permutation(len(pool))]
    seen = set(words)
    draws = Draws(rng)
    while len(words) < n:
        for w in draws.words(n - len(words)):
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words


def _cwe_list(
    rng: np.random.Generator, num_words: int, freq_cw: int, freq_ucw: int, num_cw: int
) -> tuple[list[str], np.ndarray]:
    """RULER's word list: the first `num_cw` words `freq_cw` times, the others `freq_ucw` times, shuffled.

    Returns the words and, for each list item in order, the index of its word (the common ones are 0..num_cw-1).
    """
    words = _cwe_words(rng, num_words)
    repeats = np.full(len(words), freq_ucw, dtype=np.int64)
    repeats[:num_cw] = freq_cw
    return words, rng.permutation(np.repeat(np.arange(len(words), dtype=np.int64), repeats))


def draft_cwe(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator
) -> Draft:
    a = spec.args
    num_cw = a["num_cw"]
    small = target + spec.max_new_tokens < 4096
    freq_cw, freq_ucw = (6, 1) if small else (a["freq_cw"], a["freq_ucw"])
    ex_words, ex_items = _cwe_list(rng, 20, 3, 1, num_cw) if small else _cwe_list(rng, 40, 10, 3, num_cw)
    ex_common = ex_words[:num_cw]
    ex_ctx = " ".join(f"{i + 1}. {ex_words[w]}" for i, w in enumerate(ex_items.tolist()))
    example = (
        CWE_TEMPLATE.format(context=ex_ctx)
        + CWE_ANSWER
        + " "
        + " ".join(f"{i + 1}. {w}" for i, w in enumerate(ex_common))
    )
    # Probe with numbers and words like the list's: numbers of its size, overflow words in their share.
    est_items = max(64, target // 5)
    est_words = num_cw + est_items // freq_ucw
    pool = common_word_pool()
    overflow = max(0.0, 1.0 - len(pool) / est_words)
    probe_words = [pool[i] for i in rng.integers(0, len(pool), size=64 - int(64 * overflow))]
    probe_words += Draws(rng).words(64 - len(probe_words))
    per = _probe(ctx, [f"{est_items // 2 + i}. {w}" for i, w in enumerate(probe_words)], " ")

    def make(n_items: int) -> tuple[list[str], tuple]:
        num_words = num_cw + max(1, -(-(n_items - num_cw * freq_cw) // freq_ucw))
        words, items = _cwe_list(rng, num_words, freq_cw, freq_ucw, num_cw)
        return [f"{i}. {words[w]}" for i, w in enumerate(items.tolist(), start=1)], (words, items)

    units, (words, items) = _generated_units(ctx, make, " ", target, per)
    common = words[:num_cw]

    def check(used: np.ndarray) -> list[str]:
        tally = np.bincount(items[used], minlength=len(words))
        if tally[:num_cw].min() <= tally[num_cw:].max(initial=0):
            raise AssemblyError("the cut left a common word no more frequent than an uncommon one")
        return common

    prefix, suffix = _split_template(CWE_TEMPLATE)
    return Draft(
        example + "\n" + prefix,
        suffix,
        CWE_ANSWER,
        units,
        np.arange(len(units), dtype=np.int64),
        list(common),
        provenance={"source": "words", "kind": "wonderwords"},
        check=check,
        reorderable=False,
    )


def _zeta(alpha: float, terms: int = 1_000_000) -> float:
    """Riemann zeta by direct sum plus the integral tail (scipy is not a dependency)."""
    k = np.arange(1, terms + 1, dtype=np.float64)
    return float(np.sum(k**-alpha) + terms ** (1 - alpha) / (alpha - 1))


def draft_fwe(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator
) -> Draft:
    a = spec.args
    alpha, wordlen = float(a["alpha"]), int(a["coded_wordlen"])
    vocab_size = max(8, target // 50)
    letters = np.array(list(string.ascii_lowercase))
    vocab: list[str] = []
    seen: set[str] = set()
    while len(vocab) < vocab_size:
        for w in ("".join(r) for r in letters[rng.integers(0, 26, size=(vocab_size, wordlen))]):
            if w not in seen and len(vocab) < vocab_size:
                seen.add(w)
                vocab.append(w)
    vocab = sorted(vocab)
    vocab = [vocab[i] for i in rng.permutation(len(vocab))]
    vocab[0] = "..."  # RULER treats the top-ranked word as noise
    units = tokenize_units(ctx.tok, vocab, " ", form="before")
    z = _zeta(alpha)
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -alpha / z
    mean_tokens = float((units.counts * weights).sum() / weights.sum())
    num_words = int(target / mean_tokens * 1.05) + 64
    while True:
        counts = (num_words * weights).astype(np.int64)
        seq = rng.permutation(np.repeat(np.arange(vocab_size, dtype=np.int64), counts))
        if int(units.counts[seq].sum()) > target + 8:
            break
        num_words = int(num_words * 1.2)

    def check(used: np.ndarray) -> list[str]:
        tally = np.bincount(seq[used], minlength=vocab_size)
        top = np.argsort(-tally[1:], kind="stable")[:4] + 1
        if sorted(top[:3].tolist()) != [1, 2, 3] or tally[top[2]] <= tally[top[3]]:
            raise AssemblyError("the cut changed the three most frequent coded words")
        return vocab[1:4]

    prefix, suffix = _split_template(FWE_TEMPLATE)
    return Draft(
        prefix,
        suffix,
        FWE_ANSWER,
        units,
        seq,
        vocab[1:4],
        provenance={"source": "coded words", "vocab_size": vocab_size},
        check=check,
    )


def draft_qa(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator, index: int
) -> Draft:
    data = ctx.qa_data.get(spec.name)
    if data is None:
        raise ValueError(f"{spec.name} needs QA data (--qa-data FILE.jsonl)")
    docs = data.documents
    per = ctx.qa_document_tokens(spec.name) + 6  # + "Document N:" and the blank line
    q = data.questions[int(rng.permutation(len(data.questions))[index % len(data.questions)])]
    gold = list(q["gold"])
    gold_set = set(gold)
    others = [i for i in rng.permutation(len(docs)).tolist() if i not in gold_set]
    prefix, suffix = _split_template(QA_TEMPLATE, query=q["question"])
    budget = target - ctx.text.count(prefix) - ctx.text.count(suffix + QA_ANSWER) - int(per[gold].sum())
    notes: list[str] = []
    body: list[int] = []
    if others:
        pool = np.asarray(others, dtype=np.int64)
        cycles = int(budget // max(int(per[pool].sum()), 1)) + 2
        tiled = np.tile(pool, cycles)
        m = int(np.searchsorted(np.cumsum(per[tiled]), budget * 1.03 + 64)) + 1
        body = tiled[:m].tolist()
        notes = _repeat_note(ctx, m / len(pool), "QA documents")
    elif budget > 0:
        notes = _repeat_note(ctx, float("inf"), "QA documents")
        reps = int(budget * 1.03 // max(int(per[gold].sum()), 1)) + 2
        body = (gold * reps)[: reps * len(gold)]
    for g in gold[1:]:  # further gold documents go to random places, as RULER shuffles all documents
        body.insert(int(rng.integers(0, len(body) + 1)), g)
    # The first gold document goes to the boundary nearest its depth, among documents sure to stay whole.
    cum = np.concatenate([[0], np.cumsum(per[np.asarray(body, dtype=np.int64)])]) if body else np.zeros(1)
    usable = max(0, int(np.searchsorted(cum, budget * 0.97, side="right")) - 1)
    pos = int(np.argmin(np.abs(cum[: usable + 1] - depth / 100.0 * budget)))
    ordered = body[:pos] + [gold[0]] + body[pos:]
    texts = [QA_DOCUMENT.format(i=i + 1, document=docs[d]) for i, d in enumerate(ordered)]
    units = tokenize_units(ctx.tok, texts, "\n\n")

    def check(used: np.ndarray) -> list[str]:
        if pos not in set(used.tolist()):
            raise AssemblyError("the gold document fell after the cut")
        return list(q["answers"])

    return Draft(
        prefix,
        suffix,
        QA_ANSWER,
        units,
        np.arange(len(units), dtype=np.int64),
        list(q["answers"]),
        provenance={"source": data.path, "kind": "qa", "documents": len(docs)},
        notes=notes,
        check=check,
        reorderable=False,
        extra={"question": q["question"], "gold_document": pos + 1},
    )


def draft_sample(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator, index: int
) -> Draft:
    if spec.kind == "niah":
        return draft_niah(ctx, spec, target, depth, rng)
    if spec.kind == "variable_tracking":
        return draft_vt(ctx, spec, target, depth, rng)
    if spec.kind == "common_words_extraction":
        return draft_cwe(ctx, spec, target, depth, rng)
    if spec.kind == "freq_words_extraction":
        return draft_fwe(ctx, spec, target, depth, rng)
    if spec.kind == "qa":
        return draft_qa(ctx, spec, target, depth, rng, index)
    raise ValueError(f"unknown task kind {spec.kind!r}")


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


def build_sample(
    ctx: BuildContext,
    spec: TaskSpec,
    length: int,
    depth: float | None,
    seed: int,
    index: int,
) -> dict[str, Any]:
    """One JSONL line: the task at `length` tokens (prompt and chat form both exact), seeded by `seed`."""
    rng = np.random.default_rng(seed)
    reserve = spec.max_new_tokens
    target = length - reserve
    if target <= 0:
        raise AssemblyError(f"{spec.name}: length {length} is not above the answer budget {reserve}")
    draft = draft_sample(ctx, spec, target, 50.0 if depth is None else float(depth), rng, index)
    fit = fit_exact(
        ctx.tok,
        counter=ctx.text,
        prefix=draft.prefix,
        suffix=draft.suffix + draft.answer_prefix,
        units=draft.units,
        order=draft.order,
        inserts=draft.inserts,
        target=target,
        reorderable=draft.reorderable,
    )
    references = draft.check(fit.used) if draft.check else draft.references
    user = draft.prefix + fit.context + draft.suffix
    line: dict[str, Any] = {
        "id": f"{spec.name}-{format_length(length)}-{index:05d}",
        "task": spec.name,
        "length": length,
        "reserve": reserve,
        "depth": depth if spec.uses_depth else None,
        "prompt": fit.text,
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": draft.answer_prefix},
        ],
        "answer_prefix": draft.answer_prefix,
        "references": references,
        "token_count": fit.token_count,
        "chat_token_count": None,
        "max_new_tokens": reserve,
        "seed": seed,
        "metric": spec.metric,
        "needle_depths": fit.insert_depths,
        "haystack": dict(
            draft.provenance,
            tokens=fit.haystack_tokens,
            units=fit.whole_units,
            partial_tokens=fit.partial_tokens,
        ),
        "notes": list(draft.notes),
        "details": draft.extra,
    }
    if ctx.chat is not None:
        head, tail = chat_frame(ctx.tok, draft.answer_prefix)
        chat_fit = fit_exact(
            ctx.tok,
            counter=ctx.chat,
            prefix=head + draft.prefix,
            suffix=draft.suffix + tail,
            units=draft.units,
            order=draft.order,
            inserts=draft.inserts,
            target=target,
            reorderable=draft.reorderable,
        )
        if draft.check:
            draft.check(chat_fit.used)
        content = draft.prefix + chat_fit.context + draft.suffix
        line["messages"][0]["content"] = content
        line["chat_token_count"] = chat_fit.token_count
        line["chat_needle_depths"] = chat_fit.insert_depths
    return line
