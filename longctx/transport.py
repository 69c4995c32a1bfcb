"""Talking HTTP to the server: which replies are worth another attempt, how long to wait, what a reply holds.

Sampling parameters and bodies are `request_body`'s; this module only knows status codes, connections and the
shape of a completion reply.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import orjson
import simdjson
import tenacity

from longctx.eval_config import ReplyLimits
from longctx.suite_reader import top_level_value

TOO_LONG = re.compile(
    r"maximum context length|context length|context window|too long|max_model_len|exceeds? the",
    re.IGNORECASE,
)
"""What servers write in a 400 that refuses a prompt longer than their context."""


class EndpointError(RuntimeError):
    """The endpoint refuses every request (authentication, unknown model or route): stop the run."""


class TransientHTTPError(Exception):
    """A reply worth retrying (429, 5xx, 408), with the server's Retry-After if it gave one."""

    def __init__(self, status: int, body: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.retry_after = retry_after


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), as requests and httpx use
    it; looked up once per run, since aiohttp's own per-request lookup (`trust_env`) costs more than a request."""
    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


def retry_after(headers: Any) -> float | None:
    """The server's Retry-After in seconds, when it gave a number."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Worth another attempt: the server's 429/5xx/malformed replies, dropped or refused connections, timeouts and
# replies cut short.
TRANSIENT = (
    TransientHTTPError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class BackoffHonouringRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff with full jitter, but never shorter than the server's Retry-After."""

    def __init__(self, base: float, cap: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=base, max=cap)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self._jitter(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, TransientHTTPError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


_INTEGER = re.compile(rb"(-?\d+)\s*(?:[,}]|$)")  # a whole integer value


def reply_count(reply: bytes) -> int:
    """`count` of a /tokenize reply, read without parsing the token list that comes with it (vLLM sends both)."""
    at = top_level_value(reply, "count") if reply.lstrip()[:1] == b"{" else None
    number = _INTEGER.match(reply, at) if at is not None else None
    if number is not None:
        return int(number.group(1))  # everything before it was parsed: it is the top-level count
    doc = simdjson.Parser().parse(reply)
    return int(doc.get("count", -1)) if isinstance(doc, simdjson.Object) else -1


def reply_text(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")


def extract_reply(body: bytes, chat: bool, streamed: bool = False) -> tuple[str, str | None, dict[str, Any]]:
    """Text, finish reason and usage of a 200 reply; a reply without them is retried like a server error."""
    if streamed:
        return extract_stream(body, chat)
    try:
        payload = orjson.loads(body)
        choice = payload["choices"][0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        return text or "", choice.get("finish_reason"), payload.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TransientHTTPError(
            200, f"malformed reply ({type(exc).__name__}): {body[:200]!r}", None
        ) from exc


def extract_stream(body: bytes, chat: bool) -> tuple[str, str | None, dict[str, Any]]:
    """Text, finish reason and usage of a streamed reply (server-sent events, usage in a last chunk). A stream
    without usage, without its end or with an error event is retried like a server error: a reply whose token
    counts are missing cannot be checked, so it is never accepted."""
    pieces: list[str] = []
    finish, usage, ended = None, None, False
    try:
        for line in body.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                ended = True
                break
            event = orjson.loads(data)
            if "error" in event:
                raise ValueError(f"error event {data[:200]!r}")
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if piece:
                    pieces.append(piece)
                finish = choice.get("finish_reason") or finish
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransientHTTPError(
            200, f"malformed stream ({type(exc).__name__}: {exc}): {body[:200]!r}", None
        ) from exc
    if not ended or not usage:
        missing = "its end ([DONE])" if not ended else "usage"
        raise TransientHTTPError(200, f"streamed reply without {missing}: {body[-200:]!r}", None)
    return "".join(pieces), finish, usage


class ServerUnreachable(RuntimeError):
    """Nothing answers at the endpoint (at the start, or for longer than the outage window during a run)."""


class ReplyTimeout(TimeoutError):
    """A request ran past one of its limits; the message names the limit and its value."""


class HttpClient:
    """One run's connection to the server: the session, its headers and proxy, and the base URL."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = headers
        self.proxy = proxy_for(base_url)

    async def post(self, route: str, body: bytes, timeout: aiohttp.ClientTimeout) -> tuple[int, bytes]:
        """One small POST (a token count, the preflight's probes): the status and the whole reply; a reply worth
        retrying raises TransientHTTPError, a request past its time ReplyTimeout."""
        try:
            async with self.session.post(
                self.base_url + route, data=body, headers=self.headers, timeout=timeout, proxy=self.proxy
            ) as response:
                status, content = response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise ReplyTimeout(
                f"no connection to {self.base_url} within {timeout.sock_connect:g} s (--connect-timeout)"
            ) from exc
        except TimeoutError as exc:
            raise ReplyTimeout(f"no complete reply to POST {route} within {timeout.total:g} s") from exc
        if status == 429 or status == 408 or status >= 500:
            raise TransientHTTPError(status, reply_text(content), retry_after(response.headers))
        return status, content

    async def post_reply(
        self, route: str, body: bytes, limits: ReplyLimits, streamed: bool
    ) -> tuple[int, bytes, float | None, float | None]:
        """One generation request under its two limits: the status, the whole reply, and, for a streamed reply,
        the seconds to its first token and from there to its end. The first-byte limit runs until the first
        streamed event (or, not streamed, the headers); then the generation limit runs until the end."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        first_byte = limits.first_byte if streamed else limits.first_byte + limits.generation
        phase, first_at = "first_byte", None
        try:
            async with asyncio.timeout_at(sent + first_byte) as limit:
                async with self.session.post(
                    self.base_url + route,
                    data=body,
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=limits.connect),
                    proxy=self.proxy,
                ) as response:
                    status = response.status
                    if streamed and status == 200:
                        head = await response.content.readany()
                        first_at = loop.time()
                    else:
                        head = b""
                    phase = "generation"
                    limit.reschedule(loop.time() + limits.generation)
                    content = head + await response.read() if head else await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise ReplyTimeout(f"{self.base_url}: {limits.timeout_message('connect', streamed)}") from exc
        except TimeoutError as exc:
            raise ReplyTimeout(limits.timeout_message(phase, streamed)) from exc
        if status == 429 or status == 408 or status >= 500:
            raise TransientHTTPError(status, reply_text(content), retry_after(response.headers))
        if first_at is None:
            return status, content, None, None
        return status, content, round(first_at - sent, 4), round(loop.time() - first_at, 4)

    async def get(self, route: str, seconds: float) -> tuple[int, bytes]:
        """One GET with a short overall limit, for the preflight and the outage probe."""
        timeout = aiohttp.ClientTimeout(total=seconds)
        async with self.session.get(
            self.base_url + route, headers=self.headers, timeout=timeout, proxy=self.proxy
        ) as response:
            return response.status, await response.read()
