"""Turn a results folder into RULER-style numbers: summary.json, a Markdown table, heatmaps and a plot.

Scores are recomputed from each result's output and references (never trusted from the results file), grouped
per task and length (and depth for the heatmaps), averaged over tasks per length, and summarised by RULER's
effective length. A sample without an answer scores 0 and is counted; the average is called RULER's only where
all 13 tasks were scored, and is labelled partial, naming the missing tasks, elsewhere. Every file is written to a temporary name and renamed, and the same results give the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from longctx.atomic import write_atomic
from longctx.client import RESULTS_FILE, RUN_FILE, read_results
from longctx.scoring import aggregate, effective_length, metric_name, score_sample
from longctx.tasks import RULER_TASKS

SUMMARY_FILE = "summary.json"
TABLE_FILE = "report.md"
PLOT_FILE = "score_by_length.png"
DEFAULT_THRESHOLD = 85.6


def length_label(length: int) -> str:
    """4096 -> 4K, 1048576 -> 1M, as RULER's tables write lengths; other numbers stay as they are."""
    if length >= 1 << 20 and length % (1 << 20) == 0:
        return f"{length >> 20}M"
    if length >= 1 << 10 and length % (1 << 10) == 0:
        return f"{length >> 10}K"
    return str(length)


def _depth_label(depth: float) -> str:
    return f"{depth:g}"


def _scored_rows(results: dict[str, dict[str, Any]]) -> tuple[list[dict], Counter, dict, dict]:
    """Every result as a score: an answer is scored as RULER scores it; a sample without one (refused as too
    long, failed, or any other status) scores 0 and is counted, as RULER scores every line of its files."""
    scored = []
    status: Counter[str] = Counter()
    samples: dict[str, Counter[int]] = {}
    metrics: dict[str, str] = {}
    for row in results.values():
        state = row.get("status", "error")
        status[state] += 1
        score = 0.0
        if state == "ok":
            score = score_sample(
                row["task"], row.get("output") or "", row["references"], metric=row.get("metric")
            )
        scored.append(
            {"task": row["task"], "length": int(row["length"]), "depth": row.get("depth"), "score": score}
        )
        samples.setdefault(row["task"], Counter())[int(row["length"])] += 1
        metrics[row["task"]] = row.get("metric") or metric_name(row["task"])
    return scored, status, samples, metrics


def missing_ruler_tasks(tasks: dict[str, dict[int, float]]) -> dict[int, list[str]]:
    """Per length, RULER's tasks that have no score there (empty lists where all 13 are present)."""
    lengths = sorted({n for row in tasks.values() for n in row})
    return {n: [t for t in RULER_TASKS if n not in tasks.get(t, {})] for n in lengths}


def summarize(
    results: dict[str, dict[str, Any]], *, model: str, threshold: float = DEFAULT_THRESHOLD
) -> dict:
    """The summary of one run: scores per task and length, the average per length, and the effective length.

    The average is RULER's only where all 13 tasks were scored at that length; elsewhere `partial` names the
    tasks that are missing, and the effective length is marked partial too."""
    scored, status, samples, metrics = _scored_rows(results)
    tasks, depths, average = aggregate(scored)
    missing = missing_ruler_tasks(tasks)
    partial = {str(n): m for n, m in missing.items() if m}
    return {
        "model": model,
        "threshold": threshold,
        "effective_length": effective_length(average, threshold),
        "effective_length_partial": bool(partial),
        "tasks": {t: {str(n): s for n, s in lengths.items()} for t, lengths in tasks.items()},
        "average": {str(n): s for n, s in average.items()},
        "ruler_average": {str(n): s for n, s in average.items() if not missing[n]},
        "partial": partial,
        "depths": {
            t: {str(n): {_depth_label(d): s for d, s in ds.items()} for n, ds in lengths.items()}
            for t, lengths in depths.items()
        },
        "samples": {
            t: {str(n): c for n, c in sorted(lengths.items())} for t, lengths in sorted(samples.items())
        },
        "metrics": dict(sorted(metrics.items())),
        "status": dict(sorted(status.items())),
    }


def _average_label(summary: dict) -> str:
    if not summary["partial"]:
        return "**RULER average**"
    missing = sorted({t for ts in summary["partial"].values() for t in ts}, key=RULER_TASKS.index)
    return f"**average (partial: missing {', '.join(missing)})**"


def markdown_table(summary: dict) -> str:
    """RULER's table: one row per task, one column per length, the average row and the effective length."""
    lengths = sorted({int(n) for row in summary["tasks"].values() for n in row})
    lines = [f"# {summary['model']}", ""]
    if not lengths:
        return "\n".join([*lines, "No samples were scored.", ""])
    lines += [
        "| task | " + " | ".join(length_label(n) for n in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for task, row in summary["tasks"].items():
        cells = [f"{row[str(n)]:.2f}" if str(n) in row else "–" for n in lengths]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    avg = [f"**{summary['average'][str(n)]:.2f}**" for n in lengths]
    lines.append(f"| {_average_label(summary)} | " + " | ".join(avg) + " |")
    eff = summary["effective_length"]
    kind = "partial average" if summary["partial"] else "RULER average"
    lines += [
        "",
        f"Effective length ({kind} above {summary['threshold']:g}, RULER's threshold is {DEFAULT_THRESHOLD:g}): "
        f"{length_label(eff) if eff is not None else 'none of the tested lengths'}",
    ]
    for n, missing in summary["partial"].items():
        lines.append(f"Partial at {length_label(int(n))}: missing {', '.join(missing)}")
    marks = ("prompt_mismatch", "budget_cut", "no_usage")
    status = summary["status"]
    failed = {k: v for k, v in status.items() if k != "ok" and k not in marks}
    if failed:
        lines.append(
            "Scored 0 and counted (no answer): " + ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
        )
    marked = [f"{mark} {status[mark]}" for mark in marks if status.get(mark)]
    if marked:
        lines.append(
            "Scored 0 and counted (the server did not run them as built; rerun after fixing it): "
            + ", ".join(marked)
        )
    return "\n".join(lines) + "\n"


def _figure_bytes(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def heatmap_png(task: str, depths: dict[str, dict[str, float]], model: str) -> bytes:
    """Depth (rows, 0% at the top) by length (columns), red to green, each cell labelled with its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = sorted(depths, key=int)
    depth_keys = sorted({d for row in depths.values() for d in row}, key=float)
    grid = np.full((len(depth_keys), len(lengths)), np.nan)
    for j, n in enumerate(lengths):
        for i, d in enumerate(depth_keys):
            if d in depths[n]:
                grid[i, j] = depths[n][d]
    fig, ax = plt.subplots(figsize=(1.1 * len(lengths) + 2.5, 0.45 * len(depth_keys) + 1.8))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(lengths)), [length_label(int(n)) for n in lengths])
    ax.set_yticks(range(len(depth_keys)), [f"{float(d):g}%" for d in depth_keys])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"{task} — {model}")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                # White on the dark ends of the colour map, black in the light middle.
                color = "white" if grid[i, j] < 20 or grid[i, j] > 80 else "black"
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="score")
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def score_plot_png(summary: dict) -> bytes:
    """Score against length: one thin line per task, the average bold, RULER's threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    all_lengths: set[int] = set()
    for task, row in summary["tasks"].items():
        xs = sorted(int(n) for n in row)
        all_lengths.update(xs)
        ax.plot(xs, [row[str(n)] for n in xs], marker="o", linewidth=1, markersize=3, alpha=0.7, label=task)
    xs = sorted(int(n) for n in summary["average"])
    ax.plot(
        xs,
        [summary["average"][str(n)] for n in xs],
        color="black",
        linewidth=2.5,
        marker="o",
        label="average",
    )
    ax.axhline(
        summary["threshold"],
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"threshold {summary['threshold']:g}",
    )
    ax.set_xscale("log", base=2)
    ticks = sorted(all_lengths)
    ax.set_xticks(ticks, [length_label(n) for n in ticks])
    ax.minorticks_off()
    ax.set_ylim(-3, 103)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("score")
    eff = summary["effective_length"]
    ax.set_title(f"{summary['model']} — effective length {length_label(eff) if eff else 'none'}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def heatmap_name(task: str) -> str:
    return f"heatmap_{task}.png"


def write_report(
    results_dir: Path | str,
    *,
    out_dir: Path | str | None = None,
    model: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    plots: bool = True,
) -> dict:
    """Read `results.jsonl` (and the model name from run.json) and write the summary, table and figures."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    results_path = results_dir / RESULTS_FILE
    if not results_path.exists():
        raise FileNotFoundError(f"{results_path}: no results to report (run `longtrove longctx eval` first)")
    if model is None:
        run_path = results_dir / RUN_FILE
        model = json.loads(run_path.read_text()).get("model", "unknown") if run_path.exists() else "unknown"
    results = read_results(results_path)
    if not results:
        raise ValueError(f"{results_path}: holds no complete result lines")
    summary = summarize(results, model=model, threshold=threshold)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    write_atomic(out / TABLE_FILE, markdown_table(summary).encode())
    if plots and summary["tasks"]:
        for task, depths in summary["depths"].items():
            write_atomic(out / heatmap_name(task), heatmap_png(task, depths, summary["model"]))
        write_atomic(out / PLOT_FILE, score_plot_png(summary))
    return summary
