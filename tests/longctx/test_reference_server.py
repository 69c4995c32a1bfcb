"""The reference server over real HTTP: what it reads, what it answers, and its faults."""

from __future__ import annotations

import httpx
import pytest

from longctx.reference_server import Faults, ReferenceModel
from tests.longctx.test_eval_support import cl100k, reference_server

__all__ = ["cl100k"]

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 60


def _needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}. "


def _question(query: str) -> str:
    return f"What are all the special magic numbers for {query} mentioned in the provided text?"


def test_answers_only_from_the_last_k_tokens(cl100k):
    prompt = _needle("early-key", "1111111") + FILLER + _needle("late-key", "2222222") + FILLER[:400]
    prompt += _question("early-key, and late-key") + " The special magic numbers for it are"
    total = len(cl100k.encode(prompt))
    with (
        reference_server(cl100k, window_tokens=total - 5) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        reply = http.post("/v1/completions", json={"model": "reference", "prompt": prompt, "max_tokens": 32})
        assert reply.status_code == 200
        body = reply.json()
        assert body["choices"][0]["text"] == " 2222222." and body["usage"]["prompt_tokens"] == total
    with reference_server(cl100k, window_tokens=total) as server, httpx.Client(base_url=server.url) as http:
        reply = http.post("/v1/completions", json={"model": "reference", "prompt": prompt, "max_tokens": 32})
        assert reply.json()["choices"][0]["text"] == " 1111111, 2222222."


def test_multi_value_distractors_and_variable_tracking(cl100k):
    model = ReferenceModel(cl100k, window_tokens=100_000)
    text = (
        _needle("k1", "11")
        + _needle("distractor", "99")
        + FILLER[:200]
        + _needle("k1", "12")
        + _question("k1")
    )
    assert model.answer_text(text) == " 11, 12."
    vt = (
        "VAR QXJ = 12345. " + FILLER[:300] + "VAR BBQ = VAR QXJ. VAR ZZZ = 777. VAR CDE = VAR BBQ. "
        "Question: Find all variables that are assigned the value 12345 in the text above."
    )
    assert model.answer_text(vt) == " QXJ BBQ CDE"
    cwe = "\n".join(f"{i}. {w}" for i, w in enumerate(["apple", "pear", "apple", "fig", "apple", "pear"], 1))
    assert model.answer_text(cwe + "\nQuestion: What are the 2 most common words in the above list?") == (
        " 1. apple 2. pear"
    )


def test_max_tokens_truncates_the_answer(cl100k):
    model = ReferenceModel(cl100k, window_tokens=100_000)
    prompt = "".join(_needle("k", str(1000000 + i)) for i in range(10)) + _question("k")
    full = model.complete(prompt, 1000)
    short = model.complete(prompt, 3)
    assert full["finish_reason"] == "stop" and short["finish_reason"] == "length"
    assert short["completion_tokens"] == 3 and full["text"].startswith(short["text"])


def test_routes_tokenize_models_errors_and_chat(chat_tokenizer_dir):
    from tokenization import load_tokenizer

    tok = load_tokenizer(str(chat_tokenizer_dir))
    user = FILLER[:300] + _needle("k", "4242") + _question("k")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": "The numbers are"}]
    with reference_server(tok, window_tokens=10_000, max_model_len=50, api_key="secret") as server:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/v1/models").status_code == 401
        auth = {"Authorization": "Bearer secret"}
        with httpx.Client(base_url=server.url, headers=auth) as http:
            models = http.get("/v1/models").json()
            assert models["data"][0]["id"] == "reference" and models["data"][0]["max_model_len"] == 50
            count = http.post("/tokenize", json={"model": "reference", "prompt": user}).json()
            assert count["count"] == len(tok.encode(user)) == len(count["tokens"])
            chat = http.post(
                "/tokenize",
                json={"messages": messages, "add_generation_prompt": False, "continue_final_message": True},
            ).json()
            rendered = f"<s>user\n{user}</s>\n<s>assistant\nThe numbers are"
            assert chat["count"] == len(tok.encode(rendered, allow_special=True))
            reply = http.post(
                "/v1/chat/completions",
                json={
                    "model": "reference",
                    "messages": messages,
                    "max_tokens": 16,
                    "add_generation_prompt": False,
                    "continue_final_message": True,
                },
            )
            assert reply.status_code == 400 and "maximum context length is 50" in reply.json()["message"]
            server.model.max_model_len = None
            reply = http.post(
                "/v1/chat/completions",
                json={
                    "model": "reference",
                    "messages": messages,
                    "max_tokens": 16,
                    "add_generation_prompt": False,
                    "continue_final_message": True,
                },
            )
            assert reply.json()["choices"][0]["message"]["content"] == " 4242."
            wrong = http.post("/v1/completions", json={"model": "other", "prompt": "x"})
            assert wrong.status_code == 404 and "other" in wrong.json()["message"]
            assert http.post("/v1/completions", content=b"{not json").status_code == 400


def test_faults_are_seeded_and_near_their_rates():
    faults = Faults(error_rate=0.2, drop_rate=0.1, delay_rate=0.1, seed=7)
    draws = [faults.draw(f"key{i}", i % 3) for i in range(4000)]
    assert draws == [faults.draw(f"key{i}", i % 3) for i in range(4000)]
    assert draws != [
        Faults(error_rate=0.2, drop_rate=0.1, delay_rate=0.1, seed=8).draw(f"key{i}", i % 3)
        for i in range(4000)
    ]
    share = {kind: draws.count(kind) / len(draws) for kind in ("500", "429", "drop", "delay", None)}
    assert share["500"] == pytest.approx(0.1, abs=0.03) and share["429"] == pytest.approx(0.1, abs=0.03)
    assert share["drop"] == pytest.approx(0.1, abs=0.03) and share["delay"] == pytest.approx(0.1, abs=0.03)
    with pytest.raises(ValueError, match="sum to at most 1"):
        Faults(error_rate=0.7, drop_rate=0.5)


def test_dropped_connections_and_injected_errors_reach_the_client(cl100k):
    prompt = _needle("k", "5") + _question("k")
    with (
        reference_server(cl100k, faults=Faults(drop_rate=1.0)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        for _ in range(2):  # no reply, then half a reply
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/v1/completions", json={"model": "reference", "prompt": prompt, "max_tokens": 8})
    with (
        reference_server(cl100k, faults=Faults(error_rate=1.0)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        statuses = {
            http.post("/v1/completions", json={"model": "reference", "prompt": prompt}).status_code
            for _ in range(12)
        }
        assert statuses == {500, 429}
        assert sum(server.stats.requests.values()) == 12 and not server.stats.answered
