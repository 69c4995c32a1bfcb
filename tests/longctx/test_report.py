"""The report: summary.json, the Markdown table and the figures, from a results folder."""

from __future__ import annotations

import json

import pytest

from longctx.client import ResultWriter
from longctx.report import PLOT_FILE, heatmap_name, length_label, write_report


def _results(folder, rows, *, torn_tail: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(folder / "results.jsonl")
    for row in rows:
        writer.write(row)
    writer.close()
    if torn_tail:
        with (folder / "results.jsonl").open("ab") as fh:
            fh.write(b'{"id": "torn", "task": "niah_single_1", "len')
    (folder / "run.json").write_text(json.dumps({"model": "my-model"}))


def _row(sid, task, length, depth, output, refs, status="ok"):
    return {
        "id": sid,
        "task": task,
        "length": length,
        "depth": depth,
        "output": output,
        "references": refs,
        "status": status,
        "score": -1.0,
    }


ROWS = [
    _row("n1", "niah_multivalue", 4096, 0.0, "1, 2, 3 and 4", ["1", "2", "3", "4"]),
    _row("n2", "niah_multivalue", 4096, 100.0, "only 3", ["1", "2", "3", "4"]),
    _row("n3", "niah_multivalue", 8192, 0.0, "nothing", ["1", "2", "3", "4"]),
    _row("n4", "niah_multivalue", 8192, 100.0, "", ["1", "2", "3", "4"], status="too_long"),
    _row("n5", "niah_multivalue", 8192, 50.0, "", ["1", "2", "3", "4"], status="error"),
    _row("q1", "qa_1", 4096, None, "it is Paris", ["paris", "france"]),
    _row("q2", "qa_1", 8192, None, "no idea", ["paris"]),
    # A later line for the same sample wins (a retried sample).
    _row("q2", "qa_1", 8192, None, "PARIS", ["paris"]),
]


def test_summary_recomputes_scores_as_ruler_and_ignores_a_torn_line(tmp_path):
    _results(tmp_path, ROWS, torn_tail=True)
    summary = write_report(tmp_path)
    assert summary["model"] == "my-model"
    assert summary["tasks"] == {
        "niah_multivalue": {"4096": 62.5, "8192": 0.0},
        "qa_1": {"4096": 100.0, "8192": 100.0},
    }
    assert summary["average"] == {"4096": 81.25, "8192": 50.0}
    assert summary["effective_length"] is None
    assert summary["depths"]["niah_multivalue"] == {
        "4096": {"0": 100.0, "100": 25.0},
        "8192": {"0": 0.0, "50": 0.0, "100": 0.0},  # the failed sample at depth 50 scores 0 and counts
    }
    assert summary["status"] == {"error": 1, "ok": 5, "too_long": 1}
    assert summary["samples"] == {"niah_multivalue": {"4096": 2, "8192": 3}, "qa_1": {"4096": 1, "8192": 1}}
    assert summary["ruler_average"] == {} and summary["effective_length_partial"] is True
    assert "niah_single_1" in summary["partial"]["4096"] and "qa_1" not in summary["partial"]["4096"]
    assert summary["metrics"] == {"niah_multivalue": "string_match_all", "qa_1": "string_match_part"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_markdown_table_and_effective_length_with_a_threshold(tmp_path):
    _results(tmp_path, ROWS)
    summary = write_report(tmp_path, threshold=80.0, out_dir=tmp_path / "rep")
    assert summary["effective_length"] == 4096
    table = (tmp_path / "rep" / "report.md").read_text()
    assert "| task | 4K | 8K |" in table
    assert "| niah_multivalue | 62.50 | 0.00 |" in table and "| qa_1 | 100.00 | 100.00 |" in table
    missing = (
        "niah_single_1, niah_single_2, niah_single_3, niah_multikey_1, niah_multikey_2, niah_multikey_3, "
    )
    missing += "niah_multiquery, vt, cwe, fwe, qa_2"
    assert f"| **average (partial: missing {missing})** | **81.25** | **50.00** |" in table
    assert "Effective length (partial average above 80, RULER's threshold is 85.6): 4K" in table
    assert f"Partial at 8K: missing {missing}" in table
    assert "Scored 0 and counted (no answer): error 1, too_long 1" in table


def test_the_ruler_average_needs_all_13_tasks_at_a_length(tmp_path):
    from longctx.tasks import RULER_TASKS

    rows = [_row(f"{t}-4k", t, 4096, None, "ref", ["ref"]) for t in RULER_TASKS]
    rows += [
        _row(f"{t}-8k", t, 8192, None, "ref" if i else "miss", ["ref"]) for i, t in enumerate(RULER_TASKS)
    ]
    rows = [r for r in rows if r["id"] != "vt-8k"]  # vt was not run at 8K
    _results(tmp_path, rows)
    summary = write_report(tmp_path)
    assert summary["ruler_average"] == {"4096": 100.0}
    assert summary["partial"] == {"8192": ["vt"]}
    assert summary["average"]["8192"] == round(11 * 100 / 12, 2)
    table = (tmp_path / "report.md").read_text()
    assert "| **average (partial: missing vt)** | **100.00** | **91.67** |" in table
    assert "| vt | 100.00 | – |" in table and "Partial at 8K: missing vt" in table
    complete = [r for r in rows if r["length"] == 4096]
    _results(tmp_path / "complete", complete)
    table = (
        write_report(tmp_path / "complete", plots=False) and (tmp_path / "complete" / "report.md").read_text()
    )
    assert "| **RULER average** | **100.00** |" in table
    assert "Effective length (RULER average above 85.6, RULER's threshold is 85.6): 4K" in table


def test_figures_are_real_pngs_one_heatmap_per_task_with_depths_and_reproducible(tmp_path):
    import matplotlib.image

    _results(tmp_path, ROWS)
    write_report(tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    assert set(first) == {heatmap_name("niah_multivalue"), PLOT_FILE}  # qa_1 has no depths
    heat = matplotlib.image.imread(tmp_path / heatmap_name("niah_multivalue"))
    assert heat.ndim == 3 and heat.shape[0] > 100 and heat.shape[1] > 100
    write_report(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.png")} == first
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_empty_or_missing_results_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.jsonl: no results"):
        write_report(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"id": "x", "tas')
    with pytest.raises(ValueError, match="no complete result lines"):
        write_report(tmp_path)


def test_length_labels():
    assert [length_label(n) for n in (4096, 131072, 1 << 20, 3000, 1536)] == [
        "4K",
        "128K",
        "1M",
        "3000",
        "1536",
    ]


def _table_rows(markdown: str) -> list[list[str]]:
    return [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]


def test_all_error_results_give_a_whole_table_with_every_sample_scored_zero(tmp_path):
    rows = [
        _row(f"e{i}", task, length, 50.0, "", ["x"], status="error")
        for i, (task, length) in enumerate([("vt", 4096), ("vt", 8192), ("cwe", 4096), ("cwe", 8192)])
    ]
    _results(tmp_path, rows)
    summary = write_report(tmp_path)
    assert summary["tasks"] == {"cwe": {"4096": 0.0, "8192": 0.0}, "vt": {"4096": 0.0, "8192": 0.0}}
    assert summary["samples"] == {"cwe": {"4096": 1, "8192": 1}, "vt": {"4096": 1, "8192": 1}}
    table = _table_rows((tmp_path / "report.md").read_text())
    assert len(table) >= 5 and {len(r) for r in table} == {3}  # task + two lengths on every row
    assert table[0][1].strip() == "4K" and table[0][2].strip() == "8K"
