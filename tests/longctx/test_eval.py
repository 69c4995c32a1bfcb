"""End to end through the command line: a runner killed mid-run and resumed, a 1M-token prompt, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.client import EvalConfig, read_results, run_eval
from longctx.reference_server import prompt_key
from pipelines.cli import app
from tests.conftest import CL100K_OFFLINE
from tests.longctx.test_eval_support import (
    cl100k,
    expected_score,
    make_suite,
    read_samples,
    reference_server,
    sample_requests,
)

__all__ = ["cl100k"]

REPO = Path(__file__).resolve().parents[2]
WINDOW = 1500


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def test_runner_killed_mid_run_resends_nothing_answered_and_loses_nothing(cl100k, tmp_path):
    depths = [float(d) for d in range(0, 101, 5)]
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[1024, 2048], depths=depths)
    samples = read_samples(suite)
    key_of = {s["id"]: prompt_key({"prompt": s["prompt"]}) for s in samples}
    out = tmp_path / "out"
    results = out / "results.jsonl"
    with reference_server(cl100k, window_tokens=WINDOW, latency_s=0.15) as server:
        argv = _cli(
            "longctx",
            "eval",
            str(suite),
            "--endpoint",
            f"{server.url}/v1",
            "--model",
            "reference",
            "--out",
            str(out),
            "--concurrency",
            "2",
            "--no-progress",
            "--no-report",
        )
        proc = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 8:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before = {sid for sid, row in read_results(results).items() if row["status"] == "ok"}
        assert 8 <= len(answered_before) < len(samples)
        first_run = sample_requests(server)
        server.stats.reset()

        cfg = EvalConfig(endpoint=server.url, model="reference", concurrency=2, progress=False)
        stats = run_eval(suite, out, cfg)
        second_run = sample_requests(server)
    # Nothing answered before the kill is sent again; everything else is sent exactly once.
    assert all(second_run.get(key_of[sid], 0) == 0 for sid in answered_before)
    missing = {s["id"] for s in samples} - answered_before
    assert {sid for sid in key_of if second_run.get(key_of[sid])} == missing
    assert all(second_run[key_of[sid]] == 1 for sid in missing)
    assert stats.skipped_done == len(answered_before) and stats.sent == len(missing)
    # Samples in flight at the kill were sent twice in all; none was lost.
    assert sum(first_run.values()) >= len(answered_before)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(row["id"] for row in lines) == sorted(s["id"] for s in samples)
    final = read_results(results)
    assert {sid: row["score"] for sid, row in final.items()} == {
        s["id"]: expected_score(s, cl100k, WINDOW) for s in samples
    }


def test_a_million_token_prompt_is_sent_and_scored(cl100k, tmp_path):
    length = 1 << 20
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[length], depths=[100.0])
    (sample,) = read_samples(suite)
    assert sample["token_count"] == length - sample["reserve"]
    with reference_server(cl100k, window_tokens=4096) as server:
        stats = run_eval(
            suite, tmp_path / "out", EvalConfig(endpoint=server.url, model="reference", progress=False)
        )
    assert stats.ok == 1 and stats.tokenize_checks[0]["match"] is True
    row = read_results(tmp_path / "out" / "results.jsonl")[sample["id"]]
    assert row["prompt_tokens"] == sample["token_count"]
    assert row["score"] == 100.0 and sample["references"][0] in row["output"]


def test_serve_reference_command_answers_eval_and_report(cl100k, tmp_path):
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[1024, 2048], depths=[0.0, 50.0, 100.0])
    server = subprocess.Popen(
        _cli(
            "longctx",
            "serve-reference",
            "--tokenizer",
            CL100K_OFFLINE,
            "--port",
            "0",
            "--window-tokens",
            str(WINDOW),
            "--model-name",
            "ref-cli",
        ),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("READY "), (line, server.stderr.read() if server.poll() is not None else "")
        url = line.split()[1]
        runner = CliRunner()
        out = tmp_path / "out"
        result = runner.invoke(
            app,
            [
                "longctx",
                "eval",
                str(suite),
                "--endpoint",
                url,
                "--model",
                "ref-cli",
                "--out",
                str(out),
                "--no-progress",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "6 sent (6 answered, 0 too long, 0 failed)" in result.output
        result = runner.invoke(app, ["longctx", "report", str(out), "--threshold", "50"])
        assert result.exit_code == 0, result.output
    finally:
        server.terminate()
        server.wait(timeout=10)
    expected = {s["id"]: expected_score(s, cl100k, WINDOW) for s in read_samples(suite)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "ref-cli"
    for length in ("1024", "2048"):
        scores = [expected[s["id"]] for s in read_samples(suite) if str(s["length"]) == length]
        assert summary["tasks"]["niah_single_2"][length] == round(sum(scores) / len(scores), 2)
    assert "| niah_single_2 |" in result.output and (out / "heatmap_niah_single_2.png").exists()


def test_eval_command_reports_bad_input_clearly(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "longctx",
            "eval",
            str(tmp_path / "nope"),
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and "nope: not a suite folder" in result.output
    result = CliRunner().invoke(app, ["longctx", "report", str(tmp_path)])
    assert result.exit_code == 2 and "results.jsonl: no results to report" in result.output


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(60)
def test_eval_with_nothing_listening_exits_at_once_naming_the_url(tmp_path):
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[1024], depths=[50.0])
    url = f"http://127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["longctx", "eval", str(suite), "--endpoint", f"{url}/v1", "--model", "m", "--out", str(out)],
    )
    # Not one retry per sample for minutes: one refused connection is enough to say so.
    assert result.exit_code == 1 and f"nothing answers at {url}" in result.output, result.output
    assert not out.exists()


def test_eval_of_a_missing_suite_creates_no_results_folder(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["longctx", "eval", str(tmp_path / "nope"), "--endpoint", "http://127.0.0.1:9", "--model", "m"]
        + ["--out", str(out)],
    )
    assert result.exit_code == 2 and "nope: not a suite folder" in result.output
    assert not out.exists()


def test_lengths_over_the_served_context_are_refused_before_sending(cl100k, tmp_path):
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[1024, 2048, 4096], depths=[50.0])
    out = tmp_path / "out"
    with reference_server(cl100k, window_tokens=WINDOW, max_model_len=3000) as server:
        argv = ["longctx", "eval", str(suite), "--endpoint", server.url, "--model", "reference"]
        result = CliRunner().invoke(app, [*argv, "--out", str(out), "--no-progress"])
        assert sum(sample_requests(server).values()) == 0
    # vLLM's way of saying the context (max_model_len on /v1/models), read from the dialect table.
    assert result.exit_code == 2, result.output
    assert "context of 3,000 tokens (GET /v1/models, vLLM, SGLang)" in result.output
    assert "4096 (needs 4,096)" in result.output and "--lengths 1024,2048" in result.output
    assert not out.exists()


def test_replies_without_usage_are_marked_scored_zero_and_stop_the_run(cl100k, tmp_path):
    # A reply that does not say what the server read and wrote cannot be checked: never taken as an answer.
    suite = make_suite(tmp_path / "suite", CL100K_OFFLINE, lengths=[1024], depths=[0.0, 50.0, 100.0])
    out = tmp_path / "out"
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        server.httpd.report_usage = False
        argv = ["longctx", "eval", str(suite), "--endpoint", server.url, "--model", "reference"]
        counted = CliRunner().invoke(app, [*argv, "--out", str(out), "--max-flagged", "10", "--no-progress"])
        stopped = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "stop"), "--no-progress"])
    assert counted.exit_code == 1, counted.output
    assert "3 no_usage" in counted.output
    rows = read_results(out / "results.jsonl")
    assert {r["status"] for r in rows.values()} == {"no_usage"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == {"no_usage": 3}
    assert {s for lengths in summary["tasks"].values() for s in lengths.values()} == {0.0}
    assert stopped.exit_code == 2, stopped.output
    assert "without usage.prompt_tokens" in stopped.output
