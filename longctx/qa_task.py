"""The question-answering tasks (qa_1, qa_2): a question's gold documents among distractor documents."""

from __future__ import annotations

import numpy as np

from longctx.assemble import AssemblyError
from longctx.drafts import BuildContext, Draft, repeat_note, split_template
from longctx.haystack import tokenize_units
from longctx.tasks import QA_ANSWER, QA_DOCUMENT, QA_TEMPLATE, TaskSpec


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
