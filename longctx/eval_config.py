"""What a run is told (`EvalConfig`) and what it did (`RunStats`): the two records every part of the runner shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class EvalConfig:
    """How to talk to the endpoint. Every default works against one local server."""

    endpoint: str
    model: str
    chat: bool = False
    concurrency: int = 4
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    """Seconds allowed for a request with an empty prompt; grows by `timeout_per_1k_tokens` per 1,000 tokens."""
    timeout_per_1k_tokens: float = 0.5
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
    """Rows marked prompt_mismatch or budget_cut (of one kind) that stop the run."""
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
        if self.timeout <= 0 or self.timeout_per_1k_tokens < 0:
            raise ValueError("timeout must be positive and timeout_per_1k_tokens not negative")
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

    def request_timeout(self, prompt_tokens: int) -> aiohttp.ClientTimeout:
        """Prefill time grows with the prompt, so the time allowed for a reply does too."""
        seconds = self.timeout + self.timeout_per_1k_tokens * prompt_tokens / 1000.0
        return aiohttp.ClientTimeout(total=seconds, sock_connect=self.connect_timeout)

    def timeout_note(self, prompt_tokens: int) -> str:
        """Which limit a timed-out request hit, for its error message."""
        return (
            f", the limit for a {prompt_tokens:,}-token prompt (--timeout {self.timeout:g} + "
            f"--timeout-per-1k-tokens {self.timeout_per_1k_tokens:g} per 1,000 prompt tokens)"
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
    outages: int = 0
    outage_s: float = 0.0
    elapsed_s: float = 0.0
    tokenize_checks: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    """What the preflight learnt: models, context size and where from, the tokenizer check, the BOS."""
