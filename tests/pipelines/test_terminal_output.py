"""What the terminal shows: datatrove's per-rank logs stay in the log folder, a failed rank is one line naming
its log, Ctrl-C is one line and exit 130, progress counts documents, and tables are never cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.pipelines.conftest import simple_recipe, write_jsonl

LONGTROVE = str(Path(sys.executable).parent / "longtrove")


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    # a session of its own, SIGINT at its default: as a command typed in a terminal
    return subprocess.Popen(
        [LONGTROVE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def test_a_failed_rank_is_one_line_with_its_log_and_nothing_else_reaches_the_terminal(
    tmp_path: Path, prose_docs: list[dict]
) -> None:
    good = write_jsonl(tmp_path / "in" / "good.jsonl", prose_docs[:10])
    bad = write_jsonl(tmp_path / "in" / "bad.jsonl", [*prose_docs[10:14], b'{"id": "x", "text": broken'])
    recipe = simple_recipe([good, bad], tmp_path, input={"on_bad_record": "fail"})
    recipe["executor"]["workers"] = 2
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    process = _start(["curate", str(tmp_path / "recipe.yaml"), "--no-progress"])
    out, err = process.communicate(timeout=240)

    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err  # no datatrove log lines of the rank that succeeded, no worker report
    assert lines[0] == "error: 1 rank(s) of stage 'filter' failed:"
    assert "bad.jsonl:5: bad_json" in lines[1] and "(log: " in lines[1]
    log = Path(lines[1].rpartition("(log: ")[2].rstrip(")"))
    assert "bad_json" in log.read_text()  # the whole story is in the rank's log


def test_ctrl_c_stops_with_one_line_and_exit_130(tmp_path: Path, prose_docs: list[dict]) -> None:
    docs = [{"id": f"{n}-{d['id']}", "text": d["text"]} for n in range(20) for d in prose_docs]
    source = write_jsonl(tmp_path / "in" / "docs.jsonl", docs)
    recipe = simple_recipe([source], tmp_path, filters=["gopher_repetition", "gopher_quality"])
    recipe["executor"].update(tasks=1, workers=1)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    process = _start(["curate", str(tmp_path / "recipe.yaml"), "--no-progress"])
    rank_log = tmp_path / "work" / "logs" / "filter" / "logs" / "task_00000.log"
    deadline = time.monotonic() + 120
    while not rank_log.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert rank_log.exists() and process.poll() is None, process.communicate()
    time.sleep(0.5)  # the rank is filtering
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = process.communicate(timeout=120)

    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == [
        "interrupted: rerun the same command to resume (finished ranks are kept)"
    ]


def test_progress_counts_documents_read_as_well_as_ranks(
    tmp_path: Path, prose_docs: list[dict], dask_client, capsys
) -> None:
    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    sources = [write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", prose_docs[i:30:2]) for i in range(2)]
    recipe = parse_recipe(simple_recipe(sources, tmp_path))
    run_recipe(recipe, client=dask_client, progress=True)
    err = capsys.readouterr().err
    assert "filter ranks: 100%" in err and "2/2" in err
    assert "filter documents: 30doc" in err  # the documents read over all ranks, not only ranks done


def test_the_why_dropped_column_is_never_cut(capsys, monkeypatch) -> None:
    from pipelines.commands.curate import print_counts
    from pipelines.runner import StepCount

    monkeypatch.setenv("COLUMNS", "80")
    reasons = {"gopher_below_alpha_threshold": 202, "gopher_too_many_end_ellipsis": 7, "gopher_short_doc": 1}
    rows = [StepCount("filter", "Gopher Quality", 279, 69, 210, reasons)]
    print_counts(rows)
    out = capsys.readouterr().out
    assert all(f"{k}: {v}" in out for k, v in reasons.items()), out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_demo_prints_stage_summaries_as_tables(capsys) -> None:
    from pipelines.commands.demo import print_summary

    print_summary("shards", {"seq_len": 1024, "tokens": 9828, "average": {"2048": 77.78}})
    out = capsys.readouterr().out
    assert "{" not in out and "9,828" in out and "2048: 77.78" in out and "seq len" in out
