"""One sample at an exact token length: the task's draft fitted by `assemble.fit_exact`, in prompt and chat form.

What differs from RULER's generators, and why:

- the haystack is cut to an exact token count (see `longctx.assemble`) instead of a binary search over the
  number of sentences;
- the needle (or first variable assignment, or gold document) is placed at a requested depth; the other needles
  go to seeded random depths, as RULER places all of them;
- every random choice comes from one numpy Generator seeded per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from longctx.aggregation_tasks import draft_cwe, draft_fwe
from longctx.assemble import AssemblyError, Fit, chat_frame, fit_exact, fit_whole_units
from longctx.drafts import BuildContext, Draft
from longctx.needle_tasks import draft_niah, draft_vt
from longctx.qa_task import draft_qa
from longctx.tasks import TaskSpec, format_length


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
    if ctx.placement.whole_units:
        return _whole_units_line(ctx, spec, length, seed, index, draft)
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
    line = _line(spec, length, depth if spec.uses_depth else None, seed, index, draft, fit, references)
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


def _line(
    spec: TaskSpec,
    length: int,
    depth: float | None,
    seed: int,
    index: int,
    draft: Draft,
    fit: Fit,
    references: list[str],
) -> dict[str, Any]:
    return {
        "id": f"{spec.name}-{format_length(length)}-{index:05d}",
        "task": spec.name,
        "length": length,
        "reserve": spec.max_new_tokens,
        "depth": depth,
        "prompt": draft.prefix + fit.context + draft.suffix + draft.answer_prefix,
        "messages": [
            {"role": "user", "content": draft.prefix + fit.context + draft.suffix},
            {"role": "assistant", "content": draft.answer_prefix},
        ],
        "answer_prefix": draft.answer_prefix,
        "references": references,
        "token_count": fit.token_count,
        "chat_token_count": None,
        "max_new_tokens": spec.max_new_tokens,
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


def _whole_units_line(
    ctx: BuildContext, spec: TaskSpec, length: int, seed: int, index: int, draft: Draft
) -> dict[str, Any]:
    """RULER's way to a length: as many whole units as fit in both forms, one context for both; `token_count`
    and `chat_token_count` say what was built (at most the length less the answer budget)."""
    target = length - spec.max_new_tokens
    fit = fit_whole_units(
        ctx.tok,
        measure=ctx.measure(draft.prefix, draft.suffix, draft.answer_prefix),
        units=draft.units,
        order=draft.order,
        inserts=draft.inserts,
        target=target,
    )
    references = draft.check(fit.used) if draft.check else draft.references
    line = _line(spec, length, draft.depth, seed, index, draft, fit, references)
    line["token_count"] = fit.form_counts[0]
    if ctx.chat is not None:
        line["chat_token_count"] = fit.form_counts[1]
        line["chat_needle_depths"] = fit.insert_depths
    return line
