"""What each OpenAI-compatible server offers beyond `/v1/completions`: where it says its context size and how it
counts a prompt's tokens. One table, consulted by the preflight; a new server is a new row, not a new branch.

Servers tried (see docs/longctx.md for what was checked on each):
- vLLM and SGLang: `max_model_len` on each `/v1/models` entry; `POST /tokenize` with `prompt` (or `messages`),
  `add_special_tokens`, answering `count` and `tokens`.
- llama.cpp's C++ server (`llama-server`): `GET /props` with `default_generation_settings.n_ctx` (the context of
  one slot) and `total_slots`; `POST /tokenize` with `content` and `add_special`, answering `tokens` only.
- llama-cpp-python's server (`python -m llama_cpp.server`): no context size anywhere; `POST
  /extras/tokenize/count` with `input`, counting the BOS the model adds (there is no switch to leave it out).
- longtrove's reference server: vLLM's shapes.

Streamed replies (`"stream": true`) carry usage in a last event only when asked with
`"stream_options": {"include_usage": true}`, and only on some servers (`STREAMS_USAGE`); the preflight asks the
server itself with a one-token request rather than trusting the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StatedNumber:
    """Where a server states a number about itself: its context (the longest prompt plus answer one request may
    use) or its slots (the requests it runs at once)."""

    servers: str
    path: str
    keys: tuple[str, ...]
    """The keys leading to the number: in the reply itself, or, for `/v1/models`, in the served model's entry."""

    def read(self, reply: Any, model: str) -> int | None:
        """The number in `reply`, or None when this server does not say it there."""
        node = reply
        if self.path == "/v1/models":
            entries = reply.get("data") if isinstance(reply, dict) else None
            node = next((e for e in entries or [] if isinstance(e, dict) and e.get("id") == model), None)
        for key in self.keys:
            node = node.get(key) if isinstance(node, dict) else None
        return int(node) if isinstance(node, int) and not isinstance(node, bool) and node > 0 else None


@dataclass(frozen=True)
class TokenizeRoute:
    """How a server counts the tokens of a text (and, for some, of chat messages)."""

    servers: str
    path: str
    text_key: str
    """The body field that holds the text."""
    without_bos: dict[str, Any] = field(default_factory=dict)
    """Body fields that make the server count the text alone; empty when it has no such switch."""
    with_bos: dict[str, Any] = field(default_factory=dict)
    """Body fields that make it count the text as a completion request would (BOS included)."""
    count_key: str = "count"
    """`count` for a number; `tokens` when the reply is only the list of token ids."""
    takes_messages: bool = False
    """Whether it also renders and counts chat `messages` (with `add_generation_prompt`,
    `continue_final_message`)."""

    @property
    def counts_bos(self) -> bool:
        """The count includes the BOS whatever we send: it is subtracted before comparing with the suite."""
        return not self.without_bos

    def describe(self) -> str:
        return f"POST {self.path} ({self.servers})"


CONTEXT_SOURCES: tuple[StatedNumber, ...] = (
    StatedNumber("vLLM, SGLang", "/v1/models", ("max_model_len",)),
    StatedNumber("llama.cpp", "/props", ("default_generation_settings", "n_ctx")),
)
"""Tried in order; the first that states a size wins."""

SLOT_SOURCES: tuple[StatedNumber, ...] = (StatedNumber("llama.cpp", "/props", ("total_slots",)),)
"""Servers that run a fixed number of requests at once and say so; a request past that number waits inside the
server while its time limit runs, so the runner sends no more than that. (vLLM and SGLang batch: no limit.)"""

TOKENIZE_ROUTES: tuple[TokenizeRoute, ...] = (
    TokenizeRoute(
        "vLLM, SGLang",
        "/tokenize",
        "prompt",
        without_bos={"add_special_tokens": False},
        with_bos={"add_special_tokens": True},
        count_key="count",
        takes_messages=True,
    ),
    TokenizeRoute(
        "llama.cpp",
        "/tokenize",
        "content",
        without_bos={"add_special": False},
        with_bos={"add_special": True},
        count_key="tokens",
    ),
    TokenizeRoute("llama-cpp-python", "/extras/tokenize/count", "input", count_key="count"),
)
"""Tried in order with a short probe text; the first that answers a positive count is used for the run. The
order matters: llama.cpp answers vLLM's body with an empty token list, which the probe rejects."""

PROBE_TEXT = "The quick brown fox jumps over the lazy dog."


STREAMS_USAGE: dict[str, bool] = {
    "vLLM": True,
    "SGLang": True,
    "llama.cpp llama-server (recent versions)": True,
    "longtrove reference server": True,
    "llama-cpp-python 0.3.36": False,  # streams events, never with usage; measured in the tests
}
"""Which servers put usage in a streamed reply when asked (`stream_options.include_usage`): there the runner
streams and times the first token apart from the answer; elsewhere it does not stream, so that every reply's
token counts are still checked."""


def servers_streaming_usage() -> str:
    return ", ".join(name for name, streams in STREAMS_USAGE.items() if streams)
