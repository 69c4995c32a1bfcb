"""The question-answering tasks (qa_1, qa_2): a question's gold documents among distractor documents."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from longctx.assemble import AssemblyError
from longctx.drafts import BuildContext, Draft, largest_fitting, repeat_note, split_template
from longctx.haystack import tokenize_units
from longctx.qa_data import QAData
from longctx.tasks import QA_ANSWER, QA_DOCUMENT, QA_TEMPLATE, TaskSpec, grid_depth


def draft_qa(
    ctx: BuildContext, spec: TaskSpec, target: int, depth: float, rng: np.random.Generator, index: int
) -> Draft:
    data = ctx.qa_data.get(spec.name)
    if data is None:
        raise ValueError(f"{spec.name} needs QA data (--qa-data FILE.jsonl)")
    if ctx.placement.ruler_qa:
        return _ruler_qa(ctx, spec.name, data, target, rng, index)
    docs = data.documents
    per = ctx.qa_document_tokens(spec.name) + 6  # + "Document N:" and the blank line
    q = data.questions[int(rng.permutation(len(data.questions))[index % len(data.questions)])]
    gold = list(q["gold"])
    gold_set = set(gold)
    others = [i for i in rng.permutation(len(docs)).tolist() if i not in gold_set]
    prefix, suffix = split_template(QA_TEMPLATE, query=q["question"])
    budget = target - ctx.text.count(prefix) - ctx.text.count(suffix + QA_ANSWER) - int(per[gold].sum())
    notes: list[str] = []
    body: list[int] = []
    if others:
        pool = np.asarray(others, dtype=np.int64)
        cycles = int(budget // max(int(per[pool].sum()), 1)) + 2
        tiled = np.tile(pool, cycles)
        m = int(np.searchsorted(np.cumsum(per[tiled]), budget * 1.03 + 64)) + 1
        body = tiled[:m].tolist()
        notes = repeat_note(ctx, m / len(pool), "QA documents")
    elif budget > 0:
        notes = repeat_note(ctx, float("inf"), "QA documents")
        reps = int(budget * 1.03 // max(int(per[gold].sum()), 1)) + 2
        body = (gold * reps)[: reps * len(gold)]
    for g in gold[1:]:  # further gold documents go to random places, as RULER shuffles all documents
        body.insert(int(rng.integers(0, len(body) + 1)), g)
    # The first gold document goes to the boundary nearest its depth, among documents sure to stay whole.
    cum = np.concatenate([[0], np.cumsum(per[np.asarray(body, dtype=np.int64)])]) if body else np.zeros(1)
    usable = max(0, int(np.searchsorted(cum, budget * 0.97, side="right")) - 1)
    pos = int(np.argmin(np.abs(cum[: usable + 1] - depth / 100.0 * budget)))
    ordered = body[:pos] + [gold[0]] + body[pos:]
    return _qa_draft(
        ctx,
        prefix,
        suffix,
        _render(docs, ordered),
        q,
        [pos],
        "the gold document fell after the cut",
        provenance={"source": data.path, "kind": "qa", "documents": len(docs)},
        notes=notes,
        extra={"question": q["question"], "gold_document": pos + 1},
    )


def _ruler_qa(
    ctx: BuildContext, task: str, data: QAData, target: int, rng: np.random.Generator, index: int
) -> Draft:
    """RULER's qa: question `index` of the file in order; its documents, then (SQuAD) the other paragraphs of
    its article, then random other documents, as many as fit; all shuffled by the one permutation of that
    many documents that Python's `random.Random(seed)` gives, so the gold document sits where RULER puts it."""
    if index >= len(data.questions):
        raise ValueError(
            f"{data.path}: sample {index} needs question {index + 1}, but the file has {len(data.questions)}"
        )
    q = data.questions[index]
    gold, more = list(q["gold"]), list(q.get("more", []))
    docs = data.documents
    taken = set(gold) | set(more)
    more = [more[i] for i in rng.permutation(len(more))]
    others = [int(i) for i in rng.permutation(len(docs)) if int(i) not in taken]
    prefix, suffix = split_template(QA_TEMPLATE, query=q["question"])
    measure = ctx.measure(prefix, suffix, QA_ANSWER)
    arranged: dict[int, list[int]] = {}

    def arrange(n: int) -> list[int]:
        if n not in arranged:
            if n >= len(docs):
                picked = (list(range(len(docs))) * (n // len(docs) + 1))[:n]
            elif n - len(gold) > len(more):
                picked = gold + more + others[: n - len(gold) - len(more)]
            else:
                picked = gold + more[: max(0, n - len(gold))]
            random.Random(ctx.seed).shuffle(picked)
            arranged[n] = picked
        return arranged[n]

    per = ctx.qa_document_tokens(task) + 6  # + "Document N:" and the blank line
    fixed = measure("")
    mean = float(per.mean())
    n = largest_fitting(
        lambda k: measure("\n\n".join(_render(docs, arrange(k)))),
        max(len(gold), int((target - fixed) / mean)),
        target,
        mean,
    )
    order = arrange(n)
    positions = [p for p, d in enumerate(order) if d in set(gold)]
    if n < len(docs) and len(positions) < len(gold):
        raise AssemblyError(f"only {n} documents fit, fewer than the question's {len(gold)}")
    notes = [f"QA documents repeated {n / len(docs):.2f}x to reach the length"] if n > len(docs) else []
    return _qa_draft(
        ctx,
        prefix,
        suffix,
        _render(docs, order),
        q,
        positions,
        "a gold document did not fit",
        provenance={"source": data.path, "kind": data.kind, "documents": len(docs)},
        notes=notes,
        extra={
            "question": q["question"],
            "question_index": index,
            "gold_documents": [p + 1 for p in positions],
            "documents": n,
            "same_article_documents": sum(1 for d in order if d in set(q.get("more", []))),
        },
        depth=grid_depth(100.0 * positions[0] / n) if positions else None,
    )


def _render(docs: list[str], order: list[int]) -> list[str]:
    """The documents in `order`, numbered as RULER's QA prompt numbers them."""
    return [QA_DOCUMENT.format(i=i + 1, document=docs[d]) for i, d in enumerate(order)]


def _qa_draft(
    ctx: BuildContext,
    prefix: str,
    suffix: str,
    texts: list[str],
    question: dict,
    gold_positions: list[int],
    missing: str,
    **fields: Any,
) -> Draft:
    """The documents as units kept in order; the answers count only if every gold document made it in."""
    units = tokenize_units(ctx.tok, texts, "\n\n")

    def check(used: np.ndarray) -> list[str]:
        if not set(gold_positions) <= set(used.tolist()):
            raise AssemblyError(missing)
        return list(question["answers"])

    return Draft.numbered(prefix, suffix, QA_ANSWER, units, list(question["answers"]), check=check, **fields)
