"""The needle tasks: niah (single, multikey, multivalue, multiquery) and variable tracking (vt)."""

from __future__ import annotations

import numpy as np

from longctx.assemble import Insert, needed_units
from longctx.drafts import BuildContext, Draft, fixed_haystack, split_template
from longctx.haystack import noise_haystack
from longctx.tasks import (
    NEEDLE,
    NIAH_ANSWER,
    NIAH_TEMPLATE,
    RULER_DEPTHS,
    VT_ANSWER,
    VT_TEMPLATE,
    TaskSpec,
    grid_depth,
)
from longctx.words import Draws


def _depths(rng: np.random.Generator, n: int) -> list[float]:
    return [float(d) for d in rng.choice(RULER_DEPTHS, size=n, replace=n > len(RULER_DEPTHS))]


def _drawn_depths(rng: np.random.Generator, n: int, haystack: str) -> list[float]:
    """RULER's needle depths: distinct points of its 40-point grid in essays (a needle goes between sentences
    at that share of the sentences), any line of a line haystack (noise, distractor needles)."""
    if haystack == "essay":
        return _depths(rng, n)
    return [float(d) for d in rng.uniform(0.0, 100.0, size=n)]


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
    prefix, suffix = split_template(template, type_needle_v=type_v, query=query)
    answer_prefix = answer.format(type_needle_v=type_v, query=query)
    # The first needle of a queried key goes to the requested depth; the others to RULER's random depths.
    first = next(i for i, (ki, _) in enumerate(needles) if ki in queried)
    if ctx.placement.drawn_depths:
        depths = _drawn_depths(rng, len(needles), a["type_haystack"])
    else:
        depths = _depths(rng, len(needles))
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
        units, order, prov, notes = fixed_haystack(ctx, a["type_haystack"], rng, target)
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
        depth=grid_depth(depths[first]) if ctx.placement.drawn_depths else None,
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
    units, order, prov, notes = fixed_haystack(ctx, hay_kind, rng, target)
    newline_haystack = units.sep == "\n"
    texts = flat if newline_haystack else [s.strip() + "." for s in flat]
    if ctx.placement.spread_chains:
        # RULER inserts each chain at sorted random lines of the whole context, keeping its order.
        spread = sorted(float(d) for d in rng.uniform(0.0, 100.0, size=len(texts)))
    else:
        spread = [float(depth), *sorted(float(d) for d in rng.uniform(depth, 100.0, size=len(texts) - 1))]
    inserts = [Insert(t, d) for t, d in zip(texts, spread, strict=True)]
    prefix, suffix = split_template(VT_TEMPLATE, query=value)
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
        depth=grid_depth(spread[0]) if ctx.placement.spread_chains else None,
    )
