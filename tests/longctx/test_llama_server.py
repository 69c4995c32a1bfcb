"""The runner against a real llama.cpp server (llama-cpp-python's, on loopback, serving a tiny random-weight Llama
written here): what the preflight finds, the BOS allowance, the prompt-mismatch and budget-cut marks, prompts
over the context, a server killed mid-run, an unknown model name."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.client import EndpointError, EvalConfig, RunStopped, ServerUnreachable, read_results, run_eval
from pipelines.cli import app
from tests.longctx.llama_server import MODEL_NAME, LlamaServer, write_tiny_llama
from tests.longctx.test_eval_support import make_suite, read_samples

pytest.importorskip("llama_cpp.server.app", reason="the test extra installs llama-cpp-python[server]")

N_CTX = 1024
DEPTHS = [0.0, 25.0, 50.0, 75.0, 100.0]
ANSWER_BUDGET = 128  # niah_single_2's max_new_tokens


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, chat_tokenizer_dir) -> Path:
    """The GGUF model, written once: the suites' tokenizer and chat template, random weights."""
    template = json.loads((chat_tokenizer_dir / "tokenizer_config.json").read_text())["chat_template"]
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return write_tiny_llama(path, chat_tokenizer_dir / "tokenizer.json", template)


@pytest.fixture(scope="session")
def llama_server(tiny_llama, tmp_path_factory):
    """One server for the tests that do not stop it, with a context of 1024 tokens."""
    server = LlamaServer(tiny_llama, N_CTX, tmp_path_factory.mktemp("llama-log") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def suite(tmp_path_factory, chat_tokenizer_dir) -> Path:
    """Lengths below (512), at (1024: prompt plus budget plus BOS is one over) and above (2048) the context."""
    out = tmp_path_factory.mktemp("llama-suite")
    return make_suite(out, str(chat_tokenizer_dir), lengths=[512, 1024, 2048], depths=DEPTHS)


def _cfg(url: str, **kwargs) -> EvalConfig:
    defaults = dict(
        model=MODEL_NAME,
        concurrency=2,
        first_byte_timeout=60.0,
        retry_wait_base=0.05,
        retry_wait_max=0.2,
        probe_every=0.2,
        progress=False,
    )
    return EvalConfig(endpoint=url + "/v1", **{**defaults, **kwargs})


def _samples(suite: Path, length: int) -> dict[str, dict]:
    return {s["id"]: s for s in read_samples(suite) if s["length"] == length}


def test_completion_mode_counts_the_bos_and_checks_every_reply(llama_server, suite, tmp_path):
    lines: list[str] = []
    stats = run_eval(suite, tmp_path, _cfg(llama_server.url, lengths=(512,)), announce=lines.append)
    assert stats.ok == len(DEPTHS) and stats.prompt_mismatch == stats.budget_cut == stats.failed == 0
    # The preflight found llama-cpp-python's count route, learnt its BOS, and says no context size is reported.
    (line,) = lines
    assert "tokenizer check: POST /extras/tokenize/count (llama-cpp-python)" in line
    assert "context size not reported" in line and "BOS tokens added: 1" in line
    assert stats.server["bos"] == 1 and stats.server["context"] is None
    assert [c["match"] for c in stats.tokenize_checks] == [True]
    samples = _samples(suite, 512)
    for sid, row in read_results(tmp_path / "results.jsonl").items():
        assert row["status"] == "ok"
        assert row["prompt_tokens"] == samples[sid]["token_count"] + 1  # the server's BOS, allowed
        # The whole budget (llama-cpp-python may count one token more when it finishes a split character).
        assert row["completion_tokens"] >= ANSWER_BUDGET and row["finish_reason"] == "length"


def test_chat_mode_on_a_server_that_closes_the_prefix_stops_with_the_fix(llama_server, suite, tmp_path):
    lines: list[str] = []
    with pytest.raises(RunStopped, match="does not continue an assistant prefix.*completion mode"):
        run_eval(suite, tmp_path, _cfg(llama_server.url, chat=True, lengths=(512,)), announce=lines.append)
    assert "tokenizer check: none in chat mode" in lines[0]
    samples = _samples(suite, 512)
    rows = read_results(tmp_path / "results.jsonl")
    assert len(rows) >= 3 and {r["status"] for r in rows.values()} == {"prompt_mismatch"}
    for sid, row in rows.items():
        # The chat rows carry the suite's chat token count; the server read more (a closed turn, a new one).
        assert row["chat_token_count"] == samples[sid]["chat_token_count"]
        assert row["prompt_tokens"] > row["chat_token_count"] + 1


def test_a_cut_answer_budget_is_marked_counted_and_reported(llama_server, suite, tmp_path):
    # Length 1024 with the BOS needs 1025 tokens: the server lowers max_tokens to 127 and says `length`.
    argv = ["longctx", "eval", str(suite), "--endpoint", llama_server.url, "--model", MODEL_NAME]
    out = tmp_path / "counted"
    result = CliRunner().invoke(
        app, [*argv, "--out", str(out), "--lengths", "1024", "--max-flagged", "10", "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert (
        f"{len(DEPTHS)} budget_cut" in result.output
        and "marked prompt_mismatch, budget_cut or no_usage" in result.output
    )
    assert "tokenizer check: POST /extras/tokenize/count" in result.output  # the preflight's line
    rows = read_results(out / "results.jsonl")
    assert {r["status"] for r in rows.values()} == {"budget_cut"}
    assert {r["completion_tokens"] for r in rows.values()} == {ANSWER_BUDGET - 1}
    summary = json.loads((out / "summary.json").read_text())
    # as RULER scores every line: a marked row scores 0 and is counted, never taken as the model's answer
    assert summary["status"] == {"budget_cut": len(DEPTHS)}
    assert {s for lengths in summary["tasks"].values() for s in lengths.values()} == {0.0}
    assert f"budget_cut {len(DEPTHS)}" in (out / "report.md").read_text()
    # With the default threshold the run stops and says what to do; a rerun sends the marked rows again.
    with pytest.raises(RunStopped, match="context is too small for length 1024.*at least 1025"):
        run_eval(suite, out, _cfg(llama_server.url, lengths=(1024,), concurrency=1))


def test_a_server_that_streams_no_usage_is_not_streamed_to_and_its_limits_say_so(
    llama_server, suite, tmp_path
):
    lines: list[str] = []
    cfg = _cfg(llama_server.url, lengths=(512,), check_tokenize=False)
    stats = run_eval(suite, tmp_path / "auto", cfg, announce=lines.append)
    # llama-cpp-python answers a streamed request with events but never with usage: streamed, no reply could be
    # checked, so the run does not stream, says so, and checks every reply's usage as before.
    assert stats.server["streams_usage"] is False and stats.server["stream"] is False
    assert stats.server["stream_note"] == "its streamed replies carry no usage"
    assert "replies not streamed" in lines[0]
    rows = read_results(tmp_path / "auto" / "results.jsonl")
    assert stats.ok == len(rows) == len(DEPTHS)
    samples = _samples(suite, 512)
    for sid, row in rows.items():
        assert row["prompt_tokens"] == samples[sid]["token_count"] + 1 and "first_byte_s" not in row
    # --stream on refuses such a server before anything is written.
    out = tmp_path / "on"
    argv = ["longctx", "eval", str(suite), "--endpoint", llama_server.url, "--model", MODEL_NAME]
    result = CliRunner().invoke(app, [*argv, "--out", str(out), "--stream", "on", "--no-progress"])
    assert result.exit_code == 2 and "does not put usage in a streamed reply" in result.output
    assert not out.exists()
    # Not streamed, its headers come with the whole answer: a limit too short names both limits and values.
    short = dict(first_byte_timeout=0.001, first_byte_per_1k_tokens=0.0, generation_timeout=0.001)
    stats = run_eval(
        suite, tmp_path / "short", _cfg(llama_server.url, lengths=(512,), max_attempts=1, **short)
    )
    errors = {r["error"] for r in read_results(tmp_path / "short" / "results.jsonl").values()}
    assert stats.failed == len(DEPTHS) and len(errors) == 1
    (error,) = errors
    assert error.startswith(
        "ReplyTimeout: first-byte limit hit: no reply within 0.002 s (the first-byte limit 0.001 s"
    )
    assert "plus --generation-timeout 0.001: this reply is not streamed" in error


def test_prompts_over_the_context_are_recorded_too_long_once(llama_server, suite, tmp_path):
    stats = run_eval(suite, tmp_path, _cfg(llama_server.url, lengths=(2048,), max_attempts=4))
    assert stats.too_long == len(DEPTHS) and stats.retries == 0 and stats.ok == 0
    rows = read_results(tmp_path / "results.jsonl")
    assert all(r["attempts"] == 1 and "maximum context length is 1024" in r["error"] for r in rows.values())


def test_an_unknown_model_name_is_refused_before_anything_is_written(llama_server, suite, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EndpointError, match=rf"does not serve model 'gpt-4'.*'{MODEL_NAME}'"):
        run_eval(suite, out, _cfg(llama_server.url, model="gpt-4", lengths=(512,)))
    assert not out.exists()


def _wait_for_lines(path: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {n} lines")


def _eval_in_thread(suite: Path, out: Path, cfg: EvalConfig) -> tuple[threading.Thread, dict]:
    """run_eval on a thread of its own, started once its first answer is written; its stats or its error
    are handed back in the dict."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["stats"] = run_eval(suite, out, cfg)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _wait_for_lines(out / "results.jsonl", 1)
    return thread, outcome


def test_a_server_killed_mid_run_pauses_the_run_until_it_is_back(tiny_llama, suite, tmp_path):
    server = LlamaServer(tiny_llama, N_CTX, tmp_path / "server.log").start()
    out = tmp_path / "out"
    try:
        thread, outcome = _eval_in_thread(suite, out, _cfg(server.url, lengths=(512,), concurrency=1))
        server.kill()
        time.sleep(1.5)  # the run waits (breaker open) instead of failing samples
        server.start()
        thread.join(timeout=120)
    finally:
        server.stop()
    assert "error" not in outcome, outcome.get("error")
    stats = outcome["stats"]
    assert stats.outages >= 1 and stats.outage_s > 0 and stats.failed == 0
    rows = read_results(out / "results.jsonl")
    assert set(rows) == set(_samples(suite, 512)) and {r["status"] for r in rows.values()} == {"ok"}


def test_a_server_that_stays_down_ends_the_run_and_a_rerun_resumes(tiny_llama, suite, tmp_path):
    server = LlamaServer(tiny_llama, N_CTX, tmp_path / "server.log").start()
    out = tmp_path / "out"
    cfg = _cfg(server.url, lengths=(512,), concurrency=1, outage_window=1.0)
    try:
        thread, outcome = _eval_in_thread(suite, out, cfg)
        server.kill()
        thread.join(timeout=60)
        error = outcome.get("error")
        assert isinstance(error, ServerUnreachable), error
        assert server.url in str(error) and "rerun the same command to resume" in str(error)
        answered = {sid for sid, r in read_results(out / "results.jsonl").items() if r["status"] == "ok"}
        assert 1 <= len(answered) < len(DEPTHS)
        server.start()
        stats = run_eval(suite, out, cfg)
    finally:
        server.stop()
    assert stats.skipped_done == len(answered) and stats.ok == len(DEPTHS) - len(answered)
