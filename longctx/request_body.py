"""The JSON body of one request: the suite's prompt or messages, explicit greedy sampling, the task's budget."""

from __future__ import annotations

from typing import Any

import orjson

from longctx.eval_config import EvalConfig


def chat_messages(sample: dict[str, Any]) -> tuple[Any, bool]:
    """The messages to send (a list, or the suite's own JSON text as an `orjson.Fragment`) and whether the last
    one is an assistant prefill to continue.

    vLLM continues a final assistant message when `continue_final_message` is true (and
    `add_generation_prompt` false); the answer prefix becomes that message so the model's output follows it, the
    way RULER and lm-eval put the prefix right before the generation.
    """
    prefix = sample.get("answer_prefix") or ""
    raw, roles = sample.get("messages_json"), sample.get("message_roles")
    if raw is not None and roles is not None:
        # Plain messages as the suite wrote them, never decoded; an answer prefix is appended to their JSON.
        if roles and roles[-1] == "assistant":
            return orjson.Fragment(bytes(raw)), True
        if prefix.strip():
            opening = bytes(raw[:-1]).rstrip()  # the list without its closing bracket
            comma = b"," if roles else b""
            prefill = orjson.dumps({"role": "assistant", "content": prefix})
            return orjson.Fragment(opening + comma + prefill + b"]"), True
        return orjson.Fragment(bytes(raw)), False
    messages = [{"role": m["role"], "content": m["content"]} for m in sample["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        return messages, True
    if prefix.strip():
        return [*messages, {"role": "assistant", "content": prefix}], True
    return messages, False


STREAM_WITH_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
"""A streamed reply whose last event carries usage (OpenAI's, vLLM's and SGLang's shape)."""


def build_request(sample: dict[str, Any], cfg: EvalConfig, streamed: bool = False) -> tuple[str, bytes]:
    """The route and JSON body for one sample, with explicit greedy sampling and the task's token budget;
    `streamed` asks for server-sent events with usage in the last one.

    In completion mode the prompt goes in as the suite wrote it (`prompt_json`), never decoded or re-encoded.
    """
    seed = cfg.seed if cfg.seed is not None else int(sample.get("seed", 0))
    body: dict[str, Any] = {
        "model": cfg.model,
        "max_tokens": int(sample["max_new_tokens"]),
        "temperature": 0.0,
        "top_p": 1.0,
        "n": 1,
        "seed": seed,
        "stream": False,
    }
    if streamed:
        body.update(STREAM_WITH_USAGE)
    if not cfg.chat:
        body.update(cfg.extra_body)
        return "/v1/completions", body_with_prompt(body, sample)
    messages, continue_final = chat_messages(sample)
    body["messages"] = messages
    if continue_final:
        body["add_generation_prompt"] = False
        body["continue_final_message"] = True
    body.update(cfg.extra_body)
    return "/v1/chat/completions", orjson.dumps(body)


def body_with_prompt(body: dict[str, Any], sample: dict[str, Any], key: str = "prompt") -> bytes:
    """`body` as JSON with the sample's prompt added last under `key`: its JSON text as the suite wrote it,
    copied once."""
    raw = sample.get("prompt_json")
    if raw is None or key in body:
        return orjson.dumps({key: sample["prompt"], **body} if raw is None else body)
    return b"".join((orjson.dumps(body)[:-1], b',"', key.encode(), b'":', raw, b"}"))
