"""RULER's scoring: string_match_all for retrieval and aggregation tasks, string_match_part for QA.

Scores are kept exactly as RULER computes them (case-insensitive substring tests on the cleaned prediction,
x100, rounded to two decimals per group) so that numbers from this runner sit next to published RULER tables.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

_NON_PRINTABLE = re.compile(r"[\x00-\x1f]")


def postprocess_pred(text: str) -> str:
    """Clean a model output the way RULER's evaluate.py does before matching."""
    return _NON_PRINTABLE.sub("\n", text.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of the references found in the prediction (retrieval, aggregation)."""
    if not references:
        raise ValueError("a sample needs at least one reference to be scored")
    pred = prediction.lower()
    return sum(1.0 for ref in references if ref.lower() in pred) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1 if any reference is found in the prediction, else 0 (question answering)."""
    if not references:
        raise ValueError("a sample needs at least one reference to be scored")
    pred = prediction.lower()
    return max(1.0 if ref.lower() in pred else 0.0 for ref in references)


def metric_name(task: str) -> str:
    """RULER's metric for a task name: QA tasks (qa_1, qa_2, ...) match any reference, the rest all of them."""
    return "string_match_part" if task.startswith("qa") else "string_match_all"


_METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score_sample(task: str, output: str, references: Sequence[str], *, metric: str | None = None) -> float:
    """One sample's score in [0, 100] on the cleaned output, with the suite's metric or the task's default."""
    name = metric or metric_name(task)
    if name not in _METRICS:
        raise ValueError(f"task {task}: unknown metric {name!r} (expected one of {sorted(_METRICS)})")
    return 100.0 * _METRICS[name](postprocess_pred(output), references)


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def aggregate(
    scored: Iterable[Mapping[str, object]],
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, dict[float, float]]], dict[int, float]]:
    """Group sample scores as RULER reports them.

    `scored` holds dicts with `task`, `length`, `depth` and `score` (0-100). Returns the per task and length
    means, the per task, length and depth means (for heatmaps), and the per length average over tasks (the mean
    of the task scores, as RULER's table averages its columns).
    """
    by_task: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_depth: dict[str, dict[int, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in scored:
        task, length, score = str(row["task"]), int(row["length"]), float(row["score"])  # type: ignore[arg-type]
        by_task[task][length].append(score)
        depth = row.get("depth")
        if depth is not None:
            by_depth[task][length][float(depth)].append(score)  # type: ignore[arg-type]
    tasks = {t: {n: _mean(v) for n, v in sorted(lengths.items())} for t, lengths in sorted(by_task.items())}
    depths = {
        t: {n: {d: _mean(v) for d, v in sorted(ds.items())} for n, ds in sorted(lengths.items())}
        for t, lengths in sorted(by_depth.items())
    }
    columns: dict[int, list[float]] = defaultdict(list)
    for lengths in tasks.values():
        for n, s in lengths.items():
            columns[n].append(s)
    average = {n: _mean(v) for n, v in sorted(columns.items())}
    return tasks, depths, average


def effective_length(average: Mapping[int, float], threshold: float = 85.6) -> int | None:
    """The longest length up to which every average score stays above the threshold, as RULER defines it.

    RULER's threshold is Llama-2-7B's 4K score (85.6); a model's effective length is the longest tested length
    that it passes with no failing length before it. None when even the shortest length fails.
    """
    best: int | None = None
    for length in sorted(average):
        if average[length] > threshold:
            best = length
        else:
            break
    return best
