"""The two time limits of a request against the reference server: the first-byte limit (time queued and prompt
processing) and the generation limit (the answer), each firing on its own, named with its value, streamed or not;
and streamed replies read, timed and checked like the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from longctx.client import EvalConfig, read_results, run_eval
from longctx.reference_server import Faults
from longctx.transport import TransientHTTPError, extract_stream
from tests.conftest import CL100K_OFFLINE
from tests.longctx.test_eval_support import cl100k, make_suite, read_samples, reference_server

__all__ = ["cl100k"]

DEPTHS = [0.0, 50.0, 100.0]
WINDOW = 1500
HELD = 1.5  # seconds the server holds a faulty reply: past the short limit, far inside the long one


@pytest.fixture(scope="module")
def suite(tmp_path_factory, cl100k) -> Path:
    return make_suite(tmp_path_factory.mktemp("suite"), CL100K_OFFLINE, lengths=[1024], depths=DEPTHS)


def _cfg(url: str, **kwargs) -> EvalConfig:
    defaults = dict(model="reference", concurrency=3, max_attempts=1, check_tokenize=False, progress=False)
    return EvalConfig(endpoint=url + "/v1", **{**defaults, **kwargs})


def _errors(out: Path) -> set[str]:
    rows = read_results(out / "results.jsonl")
    assert {r["status"] for r in rows.values()} == {"error"}
    return {r["error"] for r in rows.values()}


def test_streamed_rows_record_first_byte_and_generation_times_and_are_checked(suite, cl100k, tmp_path):
    with reference_server(cl100k, window_tokens=WINDOW, latency_s=0.2) as server:
        stats = run_eval(suite, tmp_path, _cfg(server.url))
    assert stats.server["streams_usage"] is True and stats.server["stream"] is True
    samples = {s["id"]: s for s in read_samples(suite)}
    rows = read_results(tmp_path / "results.jsonl")
    assert stats.ok == len(rows) == len(DEPTHS)
    for sid, row in rows.items():
        # The server holds each answer 0.2 s before its first event: all of it is first-byte time.
        assert row["first_byte_s"] >= 0.2 and 0 <= row["generation_s"] < row["first_byte_s"]
        assert row["prompt_tokens"] == samples[sid]["token_count"]  # usage read from the stream's last event
        assert row["completion_tokens"] > 0 and row["finish_reason"] == "stop"
    with reference_server(cl100k, window_tokens=WINDOW) as server:
        stats = run_eval(suite, tmp_path / "off", _cfg(server.url, stream="off"))
        bodies = list(server.stats.bodies)
    assert stats.server["stream"] is False and stats.server["streams_usage"] is None
    assert all(b["stream"] is False for b in bodies)  # --stream off: not even the probe streams
    off = read_results(tmp_path / "off" / "results.jsonl")
    assert {sid: r["output"] for sid, r in off.items()} == {sid: r["output"] for sid, r in rows.items()}
    assert all("first_byte_s" not in r for r in off.values())  # not streamed: the two times are not known


@pytest.mark.parametrize("stream", ["auto", "off"])
def test_a_reply_held_before_its_first_token_hits_the_first_byte_limit(suite, cl100k, tmp_path, stream):
    faults = Faults(delay_rate=1.0, delay_s=HELD)
    with reference_server(cl100k, window_tokens=WINDOW, faults=faults) as server:
        # Streamed: the generation limit is long, the first-byte limit short. Not streamed, both are timed
        # together (the headers come after the whole answer), so both must be short for it to fire.
        generation = 60.0 if stream == "auto" else 0.4
        stats = run_eval(
            suite,
            tmp_path,
            _cfg(server.url, stream=stream, first_byte_timeout=0.5, first_byte_per_1k_tokens=0.1,
                 generation_timeout=generation),
        )  # fmt: skip
    assert stats.failed == len(DEPTHS) and stats.server["stream"] is (stream == "auto")
    (error,) = _errors(tmp_path)
    (tokens,) = {s["token_count"] for s in read_samples(suite)}
    first_byte = round(0.5 + 0.1 * tokens / 1000, 3)  # the limit grows with the prompt
    assert error.startswith("ReplyTimeout: first-byte limit hit")
    assert f"--first-byte-per-1k-tokens 0.1 per 1,000 tokens of a {tokens}-token prompt" in error
    if stream == "auto":
        assert f"no token within {first_byte:g} s" in error and "time queued in the server counts" in error
    else:
        assert f"no reply within {round(first_byte + 0.4, 3):g} s" in error
        assert f"the first-byte limit {first_byte:g} s" in error and "--generation-timeout 0.4" in error


@pytest.mark.parametrize("stream", ["auto", "off"])
def test_a_reply_stalled_after_its_first_byte_hits_the_generation_limit(suite, cl100k, tmp_path, stream):
    faults = Faults(stall_rate=1.0, delay_s=HELD)
    with reference_server(cl100k, window_tokens=WINDOW, faults=faults) as server:
        stats = run_eval(
            suite, tmp_path, _cfg(server.url, stream=stream, first_byte_timeout=60.0, generation_timeout=0.5)
        )
    assert stats.failed == len(DEPTHS) and stats.server["stream"] is (stream == "auto")
    (error,) = _errors(tmp_path)
    assert error.startswith("ReplyTimeout: generation limit hit")
    if stream == "auto":
        assert "did not end within 0.5 s of its first token (--generation-timeout)" in error
    else:
        assert "body did not arrive within 0.5 s of its headers (--generation-timeout)" in error


def test_a_stream_without_usage_or_end_is_never_accepted():
    event = b'data: {"choices": [{"index": 0, "text": " 42", "finish_reason": "length"}]}\n\n'
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}\n\n'
    assert extract_stream(event + usage + b"data: [DONE]\n\n", chat=False) == (
        " 42",
        "length",
        {"prompt_tokens": 9, "completion_tokens": 1},
    )
    with pytest.raises(TransientHTTPError, match="without usage"):
        extract_stream(event + b"data: [DONE]\n\n", chat=False)
    with pytest.raises(TransientHTTPError, match=r"without its end"):
        extract_stream(event + usage, chat=False)  # cut off before [DONE]
    with pytest.raises(TransientHTTPError, match="error event"):
        extract_stream(event + b'data: {"error": {"message": "engine died"}}\n\n', chat=False)
