"""The runner against a real reference server on loopback: exact scores, faults, too-long prompts, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from longctx.client import EndpointError, EvalConfig, RunStopped, SuiteError, read_results, run_eval
from longctx.reference_server import Faults, prompt_key
from longctx.report import write_report
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

LENGTHS = [1024, 2048, 4096]
DEPTHS = [0.0, 25.0, 50.0, 75.0, 100.0]
WINDOW = 1500
TASK = "niah_single_2"


def _cfg(url: str, **kwargs) -> EvalConfig:
    defaults = dict(
        model="reference",
        concurrency=4,
        first_byte_timeout=30.0,
        first_byte_per_1k_tokens=0.0,
        retry_wait_base=0.01,
        retry_wait_max=0.05,
        progress=False,
    )
    return EvalConfig(endpoint=url + "/v1", **{**defaults, **kwargs})


@pytest.fixture(scope="module")
def niah_suite(tmp_path_factory, cl100k) -> Path:
    return make_suite(tmp_path_factory.mktemp("suite"), CL100K_OFFLINE, lengths=LENGTHS, depths=DEPTHS)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, niah_suite, cl100k) -> tuple[Path, list[dict], dict]:
    """One fault-free run, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("clean")
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        stats = run_eval(niah_suite, out, _cfg(server.url))
        bodies = list(server.stats.bodies)
    assert stats.ok == len(LENGTHS) * len(DEPTHS) and stats.failed == 0
    return out, bodies, read_results(out / "results.jsonl")


def test_scores_follow_length_and_depth_exactly(clean_run, niah_suite, cl100k):
    out, _, results = clean_run
    samples = read_samples(niah_suite)
    expected = {s["id"]: expected_score(s, cl100k, WINDOW) for s in samples}
    got = {sid: row["score"] for sid, row in results.items()}
    assert got == expected
    # The window makes the scores depend on both length and depth: all found at 1K, early needles lost later.
    assert {expected[s["id"]] for s in samples if s["length"] == 1024} == {100.0}
    assert expected[f"{TASK}-4k-{0:05d}"] == 0.0 and expected[f"{TASK}-4k-{4:05d}"] == 100.0
    summary = write_report(out)
    for length in LENGTHS:
        mean = sum(expected[s["id"]] for s in samples if s["length"] == length) / len(DEPTHS)
        assert summary["tasks"][TASK][str(length)] == round(mean, 2)
    assert summary["tasks"][TASK]["1024"] == 100.0 > summary["tasks"][TASK]["4096"]
    assert summary["effective_length"] == 1024


def test_requests_carry_explicit_greedy_parameters(clean_run, niah_suite):
    _, bodies, _ = clean_run
    samples = {s["seed"] for s in read_samples(niah_suite)}
    # First the preflight's one-token streamed request (does the server put usage in a stream?), then the
    # samples, streamed since it does.
    probe, *bodies = bodies
    assert probe["max_tokens"] == 1 and probe["stream"] is True
    assert len(bodies) == len(LENGTHS) * len(DEPTHS)
    for body in bodies:
        assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["n"] == 1
        assert body["max_tokens"] == 128 and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["seed"] in samples


def _faults_meeting_every_kind(keys: list[str]) -> Faults:
    """The first fault seed under which the suite's first attempts meet every kind of fault."""
    for seed in range(1000):
        faults = Faults(
            error_rate=0.2, drop_rate=0.1, delay_rate=0.1, malformed_rate=0.1, delay_s=6.0, seed=seed
        )
        if {"500", "429", "drop", "delay", "malformed"} <= {faults.draw(key, 0) for key in keys}:
            return faults
    raise AssertionError("no seed gives every kind of fault")


def test_faults_leave_every_sample_answered_with_the_same_scores(clean_run, niah_suite, cl100k, tmp_path):
    _, _, clean = clean_run
    keys = [prompt_key({"prompt": s["prompt"]}) for s in read_samples(niah_suite)]
    faults = _faults_meeting_every_kind(keys)
    with reference_server(cl100k, window_tokens=WINDOW, faults=faults) as server:
        cfg = _cfg(server.url, first_byte_timeout=2.0, generation_timeout=1.0, concurrency=6)
        stats = run_eval(niah_suite, tmp_path, cfg)
        seen = dict(server.stats.faults)
        requests = sample_requests(server)
    assert {"500", "429", "drop", "delay", "malformed"} <= set(seen), seen
    assert stats.server["stream"] is True  # the preflight's probe asked again past its faults
    # Every faulty attempt at a sample was retried (the preflight's probe is not a sample).
    assert stats.failed == 0 and stats.retries == sum(requests[key] - 1 for key in keys)
    faulty = read_results(tmp_path / "results.jsonl")
    assert set(faulty) == set(clean)
    assert all(row["status"] == "ok" for row in faulty.values())
    assert {k: r["output"] for k, r in faulty.items()} == {k: r["output"] for k, r in clean.items()}
    assert any(row["attempts"] > 1 for row in faulty.values())
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(clean)  # one line per sample: failed attempts are not written


def test_too_long_prompt_is_recorded_not_retried(niah_suite, cl100k, tmp_path):
    with reference_server(cl100k, window_tokens=WINDOW, max_model_len=3000) as server:
        stats = run_eval(niah_suite, tmp_path, _cfg(server.url, max_attempts=5, check_context=False))
        requests = sample_requests(server)
    results = read_results(tmp_path / "results.jsonl")
    too_long = {sid for sid, row in results.items() if row["status"] == "too_long"}
    assert too_long == {s["id"] for s in read_samples(niah_suite) if s["length"] == 4096}
    assert stats.too_long == len(DEPTHS) and stats.retries == 0
    for sample in read_samples(niah_suite):
        assert requests[prompt_key({"prompt": sample["prompt"]})] == 1
    assert "maximum context length" in results[next(iter(too_long))]["error"]
    summary = write_report(tmp_path)
    assert summary["tasks"][TASK]["4096"] == 0.0 and summary["status"]["too_long"] == len(DEPTHS)
    # A too-long answer is final: a rerun sends nothing.
    with reference_server(cl100k, window_tokens=WINDOW, max_model_len=3000) as server:
        again = run_eval(niah_suite, tmp_path, _cfg(server.url, check_context=False))
        assert sum(sample_requests(server).values()) == 0 and again.skipped_done == len(results)


def test_rerun_sends_nothing_answered_and_ignores_a_torn_last_line(niah_suite, cl100k, tmp_path):
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        run_eval(niah_suite, tmp_path, _cfg(server.url, lengths=(1024, 2048)))
    path = tmp_path / "results.jsonl"
    first = path.read_bytes()
    last = first.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    with path.open("ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"id": "niah_single_2-4k-00000", "status": "o')
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        stats = run_eval(niah_suite, tmp_path, _cfg(server.url))
        sent = {k for k, n in sample_requests(server).items() if n}
    assert stats.skipped_done == 2 * len(DEPTHS) and stats.sent == len(DEPTHS)
    assert sent == {
        prompt_key({"prompt": s["prompt"]}) for s in read_samples(niah_suite) if s["length"] == 4096
    }
    lines = path.read_bytes().splitlines()
    assert path.read_bytes().startswith(first) and last in lines
    assert len(lines) == len(LENGTHS) * len(DEPTHS) and all(json.loads(line) for line in lines)


def test_unanswered_samples_are_recorded_and_retried_by_the_next_run(niah_suite, cl100k, tmp_path):
    with reference_server(cl100k, window_tokens=WINDOW, faults=Faults(error_rate=1.0)) as server:
        stats = run_eval(niah_suite, tmp_path, _cfg(server.url, max_attempts=3, lengths=(1024,)))
        assert sum(sample_requests(server).values()) == 3 * len(DEPTHS)
    assert stats.failed == len(DEPTHS) and stats.ok == 0
    rows = read_results(tmp_path / "results.jsonl")
    assert {r["status"] for r in rows.values()} == {"error"} and all(
        "HTTP 5" in r["error"] or "429" in r["error"] for r in rows.values()
    )
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        stats = run_eval(niah_suite, tmp_path, _cfg(server.url, lengths=(1024,)))
    assert stats.ok == len(DEPTHS) and stats.skipped_done == 0
    assert {r["status"] for r in read_results(tmp_path / "results.jsonl").values()} == {"ok"}


def test_api_key_comes_from_the_environment_and_is_never_written(niah_suite, cl100k, tmp_path, monkeypatch):
    secret = "sk-test-4f1d9a77c0"
    monkeypatch.setenv("LONGTROVE_TEST_KEY", secret)
    with reference_server(cl100k, window_tokens=WINDOW, api_key=secret) as server:
        with pytest.raises(EndpointError, match="401.*NO_SUCH_KEY_VAR"):
            run_eval(niah_suite, tmp_path / "nokey", _cfg(server.url, api_key_env="NO_SUCH_KEY_VAR"))
        stats = run_eval(niah_suite, tmp_path / "key", _cfg(server.url, api_key_env="LONGTROVE_TEST_KEY"))
        assert f"Bearer {secret}" in server.stats.authorization
    assert stats.ok == len(LENGTHS) * len(DEPTHS)
    write_report(tmp_path / "key")
    for path in (tmp_path / "key").iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_tokenize_check_warns_when_server_and_suite_disagree(
    niah_suite, cl100k, bpe_tokenizer_path, tmp_path, caplog
):
    from tokenization import load_tokenizer

    with reference_server(cl100k, window_tokens=WINDOW) as server:
        stats = run_eval(niah_suite, tmp_path / "same", _cfg(server.url, lengths=(1024, 2048)))
        assert server.stats.tokenize_calls == 2 + 2  # the preflight probe (without, with BOS), one per length
    assert [c["match"] for c in stats.tokenize_checks] == [True, True]
    other = load_tokenizer(str(bpe_tokenizer_path))
    with caplog.at_level(logging.WARNING), reference_server(other, window_tokens=WINDOW) as server:
        # Every reply then reads another prompt than the suite built: each row is marked...
        stats = run_eval(niah_suite, tmp_path / "other", _cfg(server.url, lengths=(1024,), max_flagged=10))
        # ...and with the default threshold the run stops at the third.
        with pytest.raises(RunStopped, match="3 prompt mismatches.*disagree on the tokenizer"):
            run_eval(niah_suite, tmp_path / "stopped", _cfg(server.url, lengths=(1024,)))
    assert [c["match"] for c in stats.tokenize_checks] == [False]
    assert stats.tokenize_checks[0]["server"] != stats.tokenize_checks[0]["suite"]
    assert "disagree on the tokenizer" in caplog.text
    assert stats.prompt_mismatch == len(DEPTHS) and stats.ok == 0
    rows = read_results(tmp_path / "other" / "results.jsonl")
    assert {r["status"] for r in rows.values()} == {"prompt_mismatch"}
    assert all(r["prompt_tokens"] != r["token_count"] for r in rows.values())
    stopped = json.loads((tmp_path / "stopped" / "run.json").read_text())["last_run"]["stopped"]
    assert "3 prompt mismatches" in stopped


def test_chat_requests_continue_the_answer_prefix(chat_tokenizer_dir, tmp_path):
    from tokenization import load_tokenizer

    tok = load_tokenizer(str(chat_tokenizer_dir))
    suite = make_suite(tmp_path / "suite", str(chat_tokenizer_dir), lengths=[1024, 2048], depths=DEPTHS)
    with reference_server(tok, window_tokens=WINDOW) as server:
        stats = run_eval(suite, tmp_path / "out", _cfg(server.url, chat=True))
        bodies = list(server.stats.bodies)[1:]  # after the preflight's one-token stream request
    assert stats.ok == 2 * len(DEPTHS)
    assert all(b["continue_final_message"] is True and b["add_generation_prompt"] is False for b in bodies)
    # The builder's chat token counts agree with the server's /tokenize of the same messages.
    assert [c["match"] for c in stats.tokenize_checks] == [True, True]
    results = read_results(tmp_path / "out" / "results.jsonl")
    for sample in read_samples(suite):
        # The test's template, written out: what the server must have read.
        user = sample["messages"][0]["content"]
        rendered = f"<s>user\n{user}</s>\n<s>assistant\n{sample['answer_prefix'].strip()}"
        assert results[sample["id"]]["score"] == expected_score(sample, tok, WINDOW, chat_prompt=rendered)
    assert {r["score"] for r in results.values()} == {0.0, 100.0}


def test_suite_errors_name_the_file_line_and_field(niah_suite, cl100k, tmp_path):
    bad = tmp_path / "bad"
    (bad / TASK).mkdir(parents=True)
    lines = (niah_suite / TASK / "1k.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["references"]
    (bad / TASK / "1k.jsonl").write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    with (
        reference_server(cl100k, window_tokens=WINDOW) as server,
        pytest.raises(SuiteError, match=r"1k\.jsonl:2: field 'references' is missing"),
    ):
        run_eval(bad, tmp_path / "out", _cfg(server.url))


def test_a_results_folder_refuses_another_model_or_mode(niah_suite, cl100k, tmp_path):
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        run_eval(niah_suite, tmp_path, _cfg(server.url, lengths=(1024,)))
        with pytest.raises(EndpointError, match="use a new --out folder"):
            run_eval(niah_suite, tmp_path, _cfg(server.url, model="other", lengths=(1024,)))
        with pytest.raises(EndpointError, match="completion mode"):
            run_eval(niah_suite, tmp_path, _cfg(server.url, chat=True, lengths=(1024,)))
        assert sum(sample_requests(server).values()) == len(DEPTHS)


def test_proxy_settings_come_from_the_environment(monkeypatch):
    from longctx.client import proxy_for

    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("http://gpu-node:8000/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert proxy_for("http://gpu-node:8000/v1") == "http://proxy.internal:3128"
    assert proxy_for("http://127.0.0.1:8000/v1") is None
    assert proxy_for("https://api.example.com/v1") is None  # no HTTPS_PROXY set
