"""Before any sample is sent: is the server there, does it serve the model, does every length fit its context,
and which of its routes can count a prompt's tokens (with the BOS it adds).

Each server says these things in its own way; `server_dialects` holds the table of ways, tried in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from longctx.eval_config import EvalConfig
from longctx.request_body import body_with_prompt, build_request, chat_messages
from longctx.server_dialects import (
    CONTEXT_SOURCES,
    PROBE_TEXT,
    SLOT_SOURCES,
    TOKENIZE_ROUTES,
    StatedNumber,
    TokenizeRoute,
    servers_streaming_usage,
)
from longctx.transport import (
    TRANSIENT,
    EndpointError,
    HttpClient,
    ReplyTimeout,
    ServerUnreachable,
    TransientHTTPError,
    extract_stream,
    reply_count,
)

PREFLIGHT_SECONDS = 10.0
"""Time allowed for each preflight request: they are small, and a user waits for them."""


STREAM_PROBES = 3
"""Times the preflight asks for a streamed reply when the first attempts fail the way a flaky server does."""


@dataclass
class ServerFacts:
    """What the server said about itself."""

    models: list[str] | None = None
    context: int | None = None
    context_from: str | None = None
    slots: int | None = None
    slots_from: str | None = None
    tokenize: TokenizeRoute | None = None
    bos: int | None = None
    """Tokens the server puts before a completion prompt (its BOS); None until known."""
    streams_usage: bool | None = None
    """Whether a streamed reply ends with usage (asked with a one-token request); None when not asked."""
    stream: bool = False
    """Whether the run streams its replies, so that the first token and the answer are timed apart."""
    stream_note: str = ""
    """Why a streamed reply could not be used."""
    notes: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "context": self.context,
            "context_from": self.context_from,
            "slots": self.slots,
            "tokenize": self.tokenize.describe() if self.tokenize else None,
            "bos": self.bos,
            "streams_usage": self.streams_usage,
            "stream_note": self.stream_note or None,
            "stream": self.stream,
        }


def _json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


async def _get_json(http: HttpClient, route: str) -> tuple[int, Any]:
    status, content = await http.get(route, PREFLIGHT_SECONDS)
    return status, _json(content)


async def count_tokens(
    http: HttpClient,
    route: TokenizeRoute,
    cfg: EvalConfig,
    *,
    sample: dict[str, Any] | None = None,
    text: str | None = None,
    with_bos: bool = False,
    timeout: aiohttp.ClientTimeout | None = None,
) -> int | None:
    """The server's token count of a sample's prompt (or messages, in chat mode) or of `text`; None when the
    route does not answer with one."""
    body: dict[str, Any] = {"model": cfg.model, **(route.with_bos if with_bos else route.without_bos)}
    if sample is not None and cfg.chat:
        messages, continue_final = chat_messages(sample)
        body.update(
            messages=messages, add_generation_prompt=not continue_final, continue_final_message=continue_final
        )
        content = orjson.dumps(body)
    elif sample is not None:
        content = body_with_prompt(body, sample, key=route.text_key)
    else:
        content = orjson.dumps({**body, route.text_key: text})
    limit = timeout or aiohttp.ClientTimeout(total=PREFLIGHT_SECONDS)
    status, reply = await http.post(route.path, content, limit)
    if status != 200:
        return None
    if route.count_key == "count":
        count = reply_count(reply)
        return count if count >= 0 else None
    tokens = (_json(reply) or {}).get("tokens") if reply.lstrip()[:1] == b"{" else None
    return len(tokens) if isinstance(tokens, list) else None


async def _served_models(http: HttpClient, cfg: EvalConfig, facts: ServerFacts) -> Any:
    try:
        status, listing = await _get_json(http, "/v1/models")
    except aiohttp.ClientConnectorError as exc:
        raise ServerUnreachable(
            f"nothing answers at {http.base_url} ({exc.os_error or exc}): start the server, or check --endpoint"
        ) from exc
    except (*TRANSIENT, OSError) as exc:
        raise ServerUnreachable(
            f"{http.base_url}/v1/models did not answer within {PREFLIGHT_SECONDS:g} s ({type(exc).__name__}): "
            "is the server still loading? Try again when it answers"
        ) from exc
    if status in (401, 403):
        raise EndpointError(
            f"{http.base_url}/v1/models answered HTTP {status}: check the API key in ${cfg.api_key_env}"
        )
    entries = listing.get("data") if status == 200 and isinstance(listing, dict) else None
    facts.models = (
        [str(e.get("id")) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    )
    if cfg.check_model and cfg.model not in facts.models:
        served = ", ".join(repr(m) for m in facts.models) or "none (or it has no /v1/models)"
        raise EndpointError(
            f"{http.base_url} does not serve model {cfg.model!r}; models it lists: {served}. Pass one of them "
            "as --model (or --no-check-model for a proxy that lists no models)"
        )
    return listing


async def _stated(
    http: HttpClient, cfg: EvalConfig, sources: tuple[StatedNumber, ...], replies: dict[str, Any]
) -> tuple[int | None, str | None]:
    """The first number one of `sources` states, and where it came from; each route is asked once."""
    for source in sources:
        if source.path not in replies:
            replies[source.path] = None
            try:
                status, reply = await _get_json(http, source.path)
                replies[source.path] = reply if status == 200 else None
            except (*TRANSIENT, OSError):
                pass
        value = source.read(replies[source.path], cfg.model)
        if value is not None:
            return value, f"GET {source.path}, {source.servers}"
    return None, None


async def _find_tokenizer(http: HttpClient, cfg: EvalConfig, facts: ServerFacts) -> None:
    tried = []
    for route in TOKENIZE_ROUTES:
        tried.append(route.path)
        try:
            count = await count_tokens(http, route, cfg, text=PROBE_TEXT)
            if count is None or count <= 0:
                continue
            facts.tokenize = route
            with_bos = await count_tokens(http, route, cfg, text=PROBE_TEXT, with_bos=True)
            if with_bos is not None and route.with_bos:
                facts.bos = with_bos - count
            elif route.counts_bos:
                empty = await count_tokens(http, route, cfg, text="")
                facts.bos = empty if empty is not None and empty <= 2 else None
            return
        except (*TRANSIENT, OSError, ValueError):
            continue
    facts.notes.append(f"no tokenizer route answered (tried {', '.join(dict.fromkeys(tried))})")


async def _streams_usage(http: HttpClient, cfg: EvalConfig, facts: ServerFacts) -> bool:
    """Ask for a one-token streamed reply with usage on the route the run uses: does its last event say the
    token counts? Without them no reply could be checked, so such a server is not streamed to. A failure that
    could be passing (a dropped connection, a 5xx) is asked again, up to `STREAM_PROBES` times."""
    sample = {
        "max_new_tokens": 1,
        "prompt": PROBE_TEXT,
        "messages": [{"role": "user", "content": PROBE_TEXT}],
    }
    route, body = build_request(sample, cfg, streamed=True)
    for _ in range(STREAM_PROBES):
        try:
            status, content = await http.post(route, body, aiohttp.ClientTimeout(total=PREFLIGHT_SECONDS * 3))
        except ReplyTimeout as exc:  # a busy server: asking again would only keep the user waiting
            facts.stream_note = f"a streamed request timed out ({exc})"
            return False
        except (*TRANSIENT, OSError) as exc:
            facts.stream_note = f"a streamed request failed ({type(exc).__name__}: {str(exc)[:120]})"
            continue
        if status != 200:
            facts.stream_note = f"a streamed request was answered HTTP {status}"
            return False
        try:
            extract_stream(content, cfg.chat)
            return True
        except TransientHTTPError as exc:
            if b"data:" in content:  # a whole stream, but unusable: the server's way, not a passing fault
                without_usage = "without usage" in str(exc)
                facts.stream_note = (
                    "its streamed replies carry no usage"
                    if without_usage
                    else f"its stream: {str(exc)[:120]}"
                )
                return False
            facts.stream_note = f"a streamed request was answered {str(exc)[:120]}"
    return False


def check_lengths_fit(facts: ServerFacts, needs: dict[int, int], url: str) -> None:
    """Refuse the lengths whose longest request (prompt, answer budget, BOS, chat template) exceeds the
    server's context: their answers would be cut short or refused."""
    if facts.context is None:
        return
    bos = facts.bos or 0
    over = {length: need + bos for length, need in sorted(needs.items()) if need + bos > facts.context}
    if not over:
        return
    fits = [str(n) for n in sorted(needs) if n not in over]
    listed = ", ".join(f"{n} (needs {need:,})" for n, need in over.items())
    raise EndpointError(
        f"the server at {url} has a context of {facts.context:,} tokens ({facts.context_from}); these lengths "
        f"need more: {listed}. Serve the model with a context of at least {max(over.values()):,}, "
        + (f"leave them out with --lengths {','.join(fits)}, " if fits else "")
        + "or pass --allow-over-context to send them anyway and record the refusals"
    )


async def preflight(http: HttpClient, cfg: EvalConfig, needs: dict[int, int]) -> ServerFacts:
    """Ask the server what it serves, its context and its tokenizer route; raise on what cannot work.

    `needs` maps each length to be sent to the tokens its longest request takes before the server's BOS.
    """
    facts = ServerFacts()
    listing = await _served_models(http, cfg, facts)
    replies: dict[str, Any] = {"/v1/models": listing}
    facts.context, facts.context_from = await _stated(http, cfg, CONTEXT_SOURCES, replies)
    facts.slots, facts.slots_from = await _stated(http, cfg, SLOT_SOURCES, replies)
    if cfg.check_tokenize:
        await _find_tokenizer(http, cfg, facts)
    if cfg.check_context:
        check_lengths_fit(facts, needs, http.base_url)
    if cfg.stream != "off":
        facts.streams_usage = await _streams_usage(http, cfg, facts)
        facts.stream = facts.streams_usage
        if cfg.stream == "on" and not facts.stream:
            raise EndpointError(
                f"--stream on, but {http.base_url} does not put usage in a streamed reply ({facts.stream_note}), "
                f"so its replies could not be checked: use --stream auto or off (servers that do: "
                f"{servers_streaming_usage()})"
            )
    return facts


def describe(facts: ServerFacts, cfg: EvalConfig) -> str:
    """The line printed before the run: what was checked, and what could not be."""
    model = f"model {cfg.model!r} " + ("listed" if cfg.model in (facts.models or []) else "not checked")
    context = (
        f"context {facts.context:,} tokens ({facts.context_from})"
        if facts.context
        else "context size not reported by this server (each reply's answer budget is checked instead)"
    )
    route = facts.tokenize
    if not cfg.check_tokenize:
        check = "tokenizer check off"
    elif route is None:
        check = (
            f"tokenizer check: none ({'; '.join(facts.notes)}); each reply's usage.prompt_tokens is checked"
        )
    elif cfg.chat and not route.takes_messages:
        check = (
            f"tokenizer check: none in chat mode ({route.describe()} counts text only); each reply's "
            "usage.prompt_tokens is checked"
        )
    else:
        check = f"tokenizer check: {route.describe()}"
    bos = f"; BOS tokens added: {facts.bos}" if facts.bos is not None else ""
    if facts.stream:
        timing = "replies streamed (usage in the last event): first token and answer timed apart"
    elif cfg.stream == "off":
        timing = "replies not streamed (--stream off): first-byte and generation limits timed together"
    else:
        timing = (
            f"replies not streamed ({facts.stream_note}): first-byte and generation limits timed together"
        )
    slots = ""
    if facts.slots is not None and facts.slots < cfg.concurrency:
        slots = (
            f"; --concurrency {cfg.concurrency} lowered to the server's {facts.slots} slot(s) ({facts.slots_from}): "
            "more requests would wait inside the server while their time limit runs"
        )
    return f"server {cfg.base_url}: {model}; {context}; {check}{bos}; {timing}{slots}"
