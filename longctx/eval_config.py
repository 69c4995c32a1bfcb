"""What a run is told (`EvalConfig`) and what it did (`RunStats`): the two records every part of the runner shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp

STREAM_MODES = ("auto", "on", "off")


def _seconds(value: float) -> str:
    return f"{round(value, 3):g}"


@dataclass(frozen=True)
class ReplyLimits:
    """The time limits of one request, and the options that set them (for the message when one is hit)."""

    first_byte: float
    """Seconds from sending to the first token (streamed) or to the reply's headers (not streamed)."""
    generation: float
    """Seconds from the first token to the end of the answer (streamed), or from the headers to the end of the
    body (not streamed)."""
    connect: float
    first_byte_rule: str

    def timeout_message(self, phase: str, streamed: bool) -> str:
        """What ran out, its value and the option that sets it."""
        if phase == "connect":
            return f"no connection within {self.connect:g} s (--connect-timeout)"
        if phase == "first_byte" and streamed:
            return (
                f"first-byte limit hit: no token within {_seconds(self.first_byte)} s ({self.first_byte_rule}; time "
                "queued in the server counts)"
            )
        if phase == "first_byte":
            return (
                f"first-byte limit hit: no reply within {_seconds(self.first_byte + self.generation)} s (the first-byte "
                f"limit {_seconds(self.first_byte)} s, {self.first_byte_rule}, plus --generation-timeout "
                f"{self.generation:g}: this reply is not streamed and the server answers only once the whole "
                "answer is written, so both are timed together)"
            )
        if streamed:
            return (
                f"generation limit hit: the answer did not end within {self.generation:g} s of its first token "
                "(--generation-timeout)"
            )
        return (
            f"generation limit hit: the reply's body did not arrive within {self.generation:g} s of its headers "
            "(--generation-timeout)"
        )


@dataclass(frozen=True)
class EvalConfig:
    """How to talk to the endpoint. Every default works against one local server."""

    endpoint: str
    model: str
    chat: bool = False
    concurrency: int = 4
    api_key_env: str = "OPENAI_API_KEY"
    first_byte_timeout: float = 120.0
    """Seconds allowed until the first token of a reply with an empty prompt (time queued in the server and
    prompt processing); grows by `first_byte_per_1k_tokens` per 1,000 prompt tokens."""
    first_byte_per_1k_tokens: float = 0.5
    generation_timeout: float = 120.0
    """Seconds allowed from the first token to the end of the answer."""
    stream: str = "auto"
    """`auto`: stream replies when the server puts usage in a streamed reply (asked once, before the run), so
    the two limits are timed apart; `off`: never; `on`: always, refusing a server that does not."""
    connect_timeout: float = 30.0
    max_attempts: int = 10
    retry_wait_base: float = 1.0
    retry_wait_max: float = 60.0
    seed: int | None = None
    """Sampling seed sent with each request; None sends each sample's own `seed` from the suite."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    lengths: tuple[int, ...] | None = None
    check_tokenize: bool = True
    check_model: bool = True
    """Refuse a model name the server does not list in /v1/models (off for proxies that list nothing)."""
    check_context: bool = True
    """Refuse lengths that do not fit the server's context (off: send them and record the refusals)."""
    max_flagged: int = 3
    """Rows marked prompt_mismatch, budget_cut or no_usage (of one kind) that stop the run."""
    outage_window: float = 300.0
    """Seconds the server may stay unreachable during a run before the run gives up."""
    probe_every: float = 2.0
    """Seconds between probes of an unreachable server."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.first_byte_timeout <= 0 or self.generation_timeout <= 0 or self.first_byte_per_1k_tokens < 0:
            raise ValueError(
                "first_byte_timeout and generation_timeout must be positive, first_byte_per_1k_tokens not negative"
            )
        if self.stream not in STREAM_MODES:
            raise ValueError(f"stream must be one of {', '.join(STREAM_MODES)}, got {self.stream!r}")
        if self.max_flagged < 1 or self.outage_window < 0 or self.probe_every <= 0:
            raise ValueError(
                "max_flagged must be at least 1, outage_window not negative, probe_every positive"
            )
        if not re.match(r"^https?://", self.endpoint):
            raise ValueError(f"endpoint must start with http:// or https://, got {self.endpoint!r}")

    @property
    def base_url(self) -> str:
        """The server root: `/v1/...` routes and vLLM's `/tokenize` hang off it."""
        url = self.endpoint.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def tokenize_timeout(self, prompt_tokens: int) -> aiohttp.ClientTimeout:
        """Counting a prompt's tokens takes at most its prompt processing time."""
        limits = self.reply_limits(prompt_tokens)
        return aiohttp.ClientTimeout(total=limits.first_byte, sock_connect=limits.connect)

    def reply_limits(self, prompt_tokens: int) -> ReplyLimits:
        """Prefill time grows with the prompt, so the wait for the first token does too; the answer's own time
        does not."""
        return ReplyLimits(
            first_byte=self.first_byte_timeout + self.first_byte_per_1k_tokens * prompt_tokens / 1000.0,
            generation=self.generation_timeout,
            connect=self.connect_timeout,
            first_byte_rule=(
                f"--first-byte-timeout {self.first_byte_timeout:g} + --first-byte-per-1k-tokens "
                f"{self.first_byte_per_1k_tokens:g} per 1,000 tokens of a {prompt_tokens:,}-token prompt"
            ),
        )


@dataclass
class RunStats:
    """What a run did; printed at the end and written to run.json."""

    samples: int = 0
    skipped_done: int = 0
    sent: int = 0
    ok: int = 0
    too_long: int = 0
    failed: int = 0
    retries: int = 0
    tokens_sent: int = 0
    prompt_mismatch: int = 0
    budget_cut: int = 0
    no_usage: int = 0
    outages: int = 0
    outage_s: float = 0.0
    elapsed_s: float = 0.0
    tokenize_checks: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    """What the preflight learnt: models, context size and where from, the tokenizer check, the BOS."""
