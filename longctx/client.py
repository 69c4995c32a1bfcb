"""A resilient runner that sends a long-context suite to an OpenAI-compatible endpoint and records answers.

Built for hours-long runs with prompts of up to a million tokens against endpoints that time out, rate-limit and
restart: every response is appended to `results.jsonl` as one whole line as soon as it arrives (one write(2),
fsynced in the background), a rerun sends only the samples without a final result, transient failures are
retried with exponential backoff and jitter, and a prompt the server rejects as too long is recorded as such
instead of being retried forever. Sampling parameters are always sent explicitly (greedy), never left to server
defaults.

The runner stays far cheaper than the server: prompts go from the suite file into the request body in one copy,
never decoded into Python strings, and for a suite built by `longctx.suite` (with its offsets.json) only the few
small fields of each line are parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import orjson
import simdjson
import tenacity

from longctx.atomic import write_atomic
from longctx.scoring import metric_name, score_sample
from longctx.suite_reader import (
    SuiteError,
    iter_suite,
    read_suite_meta,
    suite_files,
    top_level_value,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
FINAL_STATUSES = frozenset({"ok", "too_long"})

_TOO_LONG = re.compile(
    r"maximum context length|context length|context window|too long|max_model_len|exceeds? the",
    re.IGNORECASE,
)


class EndpointError(RuntimeError):
    """The endpoint refuses every request (authentication, unknown model or route): stop the run."""


class TransientHTTPError(Exception):
    """A reply worth retrying (429, 5xx, 408), with the server's Retry-After if it gave one."""

    def __init__(self, status: int, body: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.retry_after = retry_after


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
    progress: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.timeout <= 0 or self.timeout_per_1k_tokens < 0:
            raise ValueError("timeout must be positive and timeout_per_1k_tokens not negative")
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
    elapsed_s: float = 0.0
    tokenize_checks: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- suites


def count_suite_lines(
    suite_dir: Path, meta: dict[str, Any] | None = None, cfg: EvalConfig | None = None
) -> int:
    """Number of samples to expect, for the progress total: from suite.json's list of files when it has one,
    else by counting newlines (which reads the whole suite once more)."""
    meta = meta or {}
    files = meta.get("files")
    if isinstance(files, list) and all(
        isinstance(f, dict) and {"task", "length", "samples"} <= set(f) for f in files
    ):
        return sum(
            int(f["samples"])
            for f in files
            if (cfg is None or cfg.tasks is None or f["task"] in cfg.tasks)
            and (cfg is None or cfg.lengths is None or int(f["length"]) in cfg.lengths)
        )
    total = 0
    for path in suite_files(suite_dir):
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += chunk.count(b"\n")
    return total


def suite_fingerprint(suite_dir: Path) -> str:
    """sha256 of suite.json (or of the file names and sizes without it): ties a results folder to its suite."""
    meta = suite_dir / "suite.json"
    digest = hashlib.sha256()
    if meta.exists():
        digest.update(meta.read_bytes())
    else:
        for path in suite_files(suite_dir):
            digest.update(f"{path.relative_to(suite_dir)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- results


def read_results(path: Path, *, repair: bool = False) -> dict[str, dict[str, Any]]:
    """The latest result line per sample id.

    A run killed mid-write can leave a partial last line; it is ignored (and, with `repair`, cut off so that the
    next append starts on a fresh line). A malformed line anywhere else is an error naming its line number.
    """
    results: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return results
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        log.warning(
            "%s: ignoring a partial last line (%d bytes) left by an interrupted run",
            path,
            len(data) - good_end,
        )
        if repair:
            with path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
    for lineno, raw in enumerate(data[:good_end].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
            results[str(row["id"])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SuiteError(f"{path}:{lineno}: not a result line ({exc})") from exc
    return results


class ResultWriter:
    """The single writer of results.jsonl: each row is one whole line written with one `write(2)`.

    What `write(2)` returned is the kernel's, so a run killed at any point leaves every line written before it,
    whole. Against a machine crash the file is also fsynced at most every `sync_every` seconds, on a thread of
    its own so the disk never stalls the requests, and again on close.
    """

    def __init__(self, path: Path, sync_every: float = 1.0) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sync_every = sync_every
        self._last_sync = time.monotonic()
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="results-fsync")
        self._syncing: Future[None] | None = None

    def write(self, row: dict[str, Any]) -> None:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        written = os.write(self._fd, line)
        while written < len(line):  # only a full disk or a quota cuts a regular file's write short
            written += os.write(self._fd, line[written:])
        if time.monotonic() - self._last_sync >= self._sync_every:
            self._sync_in_background()

    def _sync_in_background(self) -> None:
        if self._syncing is not None:
            if not self._syncing.done():
                return
            self._syncing.result()  # an fsync error (disk gone) surfaces here
        self._last_sync = time.monotonic()
        self._syncing = self._syncer.submit(os.fsync, self._fd)

    def close(self) -> None:
        self._syncer.shutdown(wait=True)
        try:
            if self._syncing is not None:
                self._syncing.result()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


def _json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------------------------------- requests


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


def build_request(sample: dict[str, Any], cfg: EvalConfig) -> tuple[str, bytes]:
    """The route and JSON body for one sample, with explicit greedy sampling and the task's token budget.

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
    if not cfg.chat:
        body.update(cfg.extra_body)
        return "/v1/completions", _with_prompt(body, sample)
    messages, continue_final = chat_messages(sample)
    body["messages"] = messages
    if continue_final:
        body["add_generation_prompt"] = False
        body["continue_final_message"] = True
    body.update(cfg.extra_body)
    return "/v1/chat/completions", orjson.dumps(body)


def _with_prompt(body: dict[str, Any], sample: dict[str, Any]) -> bytes:
    """`body` as JSON with the sample's prompt added last: its JSON text as the suite wrote it, copied once."""
    raw = sample.get("prompt_json")
    if raw is None or "prompt" in body:
        return orjson.dumps({"prompt": sample["prompt"], **body} if raw is None else body)
    return b"".join((orjson.dumps(body)[:-1], b',"prompt":', raw, b"}"))


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), as requests and httpx use
    it; looked up once per run, since aiohttp's own per-request lookup (`trust_env`) costs more than a request."""
    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Worth another attempt: the server's 429/5xx/malformed replies, dropped or refused connections, timeouts and
# replies cut short.
_TRANSIENT = (
    TransientHTTPError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT)


class _BackoffHonouringRetryAfter(tenacity.wait.wait_base):
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


def _reply_count(reply: bytes) -> int:
    """`count` of a /tokenize reply, read without parsing the token list that comes with it (vLLM sends both)."""
    at = top_level_value(reply, "count") if reply.lstrip()[:1] == b"{" else None
    number = _INTEGER.match(reply, at) if at is not None else None
    if number is not None:
        return int(number.group(1))  # everything before it was parsed: it is the top-level count
    doc = simdjson.Parser().parse(reply)
    return int(doc.get("count", -1)) if isinstance(doc, simdjson.Object) else -1


def _text(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")


def _extract(body: bytes, chat: bool) -> tuple[str, str | None, dict[str, Any]]:
    """Text, finish reason and usage of a 200 reply; a reply without them is retried like a server error."""
    try:
        payload = orjson.loads(body)
        choice = payload["choices"][0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        return text or "", choice.get("finish_reason"), payload.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TransientHTTPError(
            200, f"malformed reply ({type(exc).__name__}): {body[:200]!r}", None
        ) from exc


class Runner:
    """Sends samples with bounded concurrency; one instance per run."""

    def __init__(
        self,
        cfg: EvalConfig,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        writer: ResultWriter,
        stats: RunStats,
        progress: Any,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.headers = headers
        self.proxy = proxy_for(cfg.base_url)
        self.writer = writer
        self.stats = stats
        self.progress = progress
        self.started = time.monotonic()

    async def post(self, route: str, body: bytes, timeout: aiohttp.ClientTimeout) -> tuple[int, bytes]:
        """One POST: the status and the whole reply; a reply worth retrying raises TransientHTTPError."""
        async with self.session.post(
            self.cfg.base_url + route, data=body, headers=self.headers, timeout=timeout, proxy=self.proxy
        ) as response:
            status, content = response.status, await response.read()
            if status == 429 or status == 408 or status >= 500:
                raise TransientHTTPError(status, _text(content), _retry_after(response.headers))
        return status, content

    def _on_retry(self, retry_state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        self._refresh()

    def _refresh(self) -> None:
        if self.progress is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress.set_postfix(
            {
                "tok/s": f"{self.stats.tokens_sent / elapsed:,.0f}",
                "retries": self.stats.retries,
                "failed": self.stats.failed,
                "too_long": self.stats.too_long,
            },
            refresh=False,
        )

    async def send(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Send one sample until it has a final answer or the attempts run out; return its result line."""
        cfg = self.cfg
        route, body = build_request(sample, cfg)
        tokens = int(sample.get("token_count") or 0)
        timeout = cfg.request_timeout(tokens)
        row: dict[str, Any] = {
            "id": sample["id"],
            "task": sample["task"],
            "length": int(sample["length"]),
            "depth": sample.get("depth"),
            "token_count": tokens,
            "references": sample["references"],
            "metric": sample.get("metric") or metric_name(sample["task"]),
        }
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_is_transient),
            wait=_BackoffHonouringRetryAfter(cfg.retry_wait_base, cfg.retry_wait_max),
            stop=tenacity.stop_after_attempt(cfg.max_attempts),
            before_sleep=self._on_retry,
            reraise=True,
        )
        started = time.monotonic()
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    status, content = await self.post(route, body, timeout)
                    if status == 200:
                        text, finish, usage = _extract(content, cfg.chat)
                    else:
                        text, finish, usage = "", None, {}
        except _TRANSIENT as exc:
            row.update(status="error", output="", error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            reply = _text(content)
            if status == 200:
                row.update(
                    status="ok",
                    output=text,
                    finish_reason=finish,
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens"),
                )
            elif status in (400, 413, 422) and (status == 413 or _TOO_LONG.search(reply)):
                row.update(status="too_long", output="", error=reply[:500])
            elif status in (401, 403, 404):
                raise EndpointError(
                    f"{cfg.base_url}{route} answered HTTP {status} ({reply[:300]}); check --endpoint, "
                    f"--model and the API key in ${cfg.api_key_env}"
                )
            else:
                row.update(status="error", output="", error=f"HTTP {status}: {reply[:500]}")
        row["attempts"] = attempts
        row["latency_s"] = round(time.monotonic() - started, 3)
        row["score"] = (
            score_sample(row["task"], row["output"], row["references"], metric=row["metric"])
            if row["status"] == "ok"
            else 0.0
        )
        return row

    def record(self, row: dict[str, Any]) -> None:
        """Append the row to the results file and count it; a sample killed before this is sent again next run."""
        self.writer.write(row)
        self.stats.sent += 1
        if row["status"] == "ok":
            self.stats.ok += 1
            self.stats.tokens_sent += row["token_count"]
        elif row["status"] == "too_long":
            self.stats.too_long += 1
        else:
            self.stats.failed += 1
            message = f"{row['id']}: failed after {row['attempts']} attempts: {row.get('error')}"
            if self.progress is not None:
                self.progress.write(message)
            else:
                log.warning(message)
        if self.progress is not None:
            self._refresh()
            self.progress.update(1)

    async def check_tokenize(self, sample: dict[str, Any]) -> None:
        """Compare the server's token count of a prompt with the suite's; warn when they disagree."""
        cfg = self.cfg
        expected = sample.get("chat_token_count" if cfg.chat else "token_count")
        if expected is None:
            return
        body: dict[str, Any] = {"model": cfg.model, "add_special_tokens": False}
        if cfg.chat:
            messages, continue_final = chat_messages(sample)
            body.update(
                messages=messages,
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
            )
        check: dict[str, Any] = {"length": int(sample["length"]), "id": sample["id"], "suite": int(expected)}
        try:
            content = orjson.dumps(body) if cfg.chat else _with_prompt(body, sample)
            status, reply = await self.post("/tokenize", content, cfg.request_timeout(int(expected)))
            server_count = _reply_count(reply) if status == 200 else None
        except (*_TRANSIENT, ValueError, AttributeError) as exc:
            check.update(server=None, match=None, note=f"/tokenize failed: {type(exc).__name__}")
            self.stats.tokenize_checks.append(check)
            return
        if server_count is None:
            check.update(server=None, match=None, note=f"/tokenize not available (HTTP {status})")
            self.stats.tokenize_checks.append(check)
            return
        check.update(server=server_count, match=server_count == int(expected))
        self.stats.tokenize_checks.append(check)
        if not check["match"]:
            message = (
                f"warning: the server counts {server_count} tokens for {sample['id']} (length {sample['length']}) "
                f"where the suite measured {expected}: suite and server disagree on the tokenizer or template"
            )
            if self.progress is not None:
                self.progress.write(message)
            log.warning(message)


class _Feed:
    """The samples still to send, shared by the workers: each takes the next one when it is free.

    Reading is synchronous (a few small fields per line, or about a millisecond per 100K tokens for a line
    validated in full), so workers never interleave inside it. The server's /tokenize check of the first sample
    of each length runs beside the requests, not before them.
    """

    def __init__(
        self,
        samples: Iterator[dict[str, Any]],
        cfg: EvalConfig,
        done: set[str],
        stats: RunStats,
        runner: Runner,
    ) -> None:
        self.samples, self.cfg, self.done, self.stats, self.runner = samples, cfg, done, stats, runner
        self.seen: set[str] = set()
        self.checked: set[int] = set()
        self.checks: list[asyncio.Task[None]] = []

    def next(self) -> dict[str, Any] | None:
        cfg = self.cfg
        for sample in self.samples:
            sid = str(sample["id"])
            if sid in self.seen:
                raise SuiteError(f"{sample['_where']}: sample id {sid!r} appears twice in the suite")
            self.seen.add(sid)
            if cfg.tasks is not None and sample["task"] not in cfg.tasks:
                continue
            length = int(sample["length"])
            if cfg.lengths is not None and length not in cfg.lengths:
                continue
            self.stats.samples += 1
            if sid in self.done:
                self.stats.skipped_done += 1
                continue
            if cfg.check_tokenize and length not in self.checked:
                self.checked.add(length)
                self.checks.append(asyncio.create_task(self.runner.check_tokenize(sample)))
            return sample
        return None


async def _run(
    suite_dir: Path, out_dir: Path, cfg: EvalConfig, done: set[str], total: int, stats: RunStats
) -> None:
    from tqdm.auto import tqdm

    headers = {"Content-Type": "application/json"}
    api_key = os.environ.get(cfg.api_key_env)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # One connection per worker plus the /tokenize check; aiohttp sets TCP_NODELAY, so a body never waits
    # behind its headers for the server's delayed ACK.
    connector = aiohttp.TCPConnector(limit=cfg.concurrency + 1)
    progress = tqdm(
        total=total, desc="longctx eval", unit="sample", disable=not cfg.progress, dynamic_ncols=True
    )
    writer = ResultWriter(out_dir / RESULTS_FILE)
    async with aiohttp.ClientSession(connector=connector) as session:
        runner = Runner(cfg, session, headers, writer, stats, progress if cfg.progress else None)

        feed = _Feed(iter_suite(suite_dir, chat=cfg.chat), cfg, done, stats, runner)

        async def work() -> None:
            while (sample := feed.next()) is not None:
                runner.record(await runner.send(sample))

        workers = [asyncio.create_task(work()) for _ in range(cfg.concurrency)]
        try:
            # A worker that fails (the endpoint refuses everything, a bad suite line) stops the others.
            finished, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                task.result()
            await asyncio.gather(*feed.checks)
        finally:
            for task in (*workers, *feed.checks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, *feed.checks, return_exceptions=True)
            writer.close()
            progress.close()


def run_eval(suite_dir: Path | str, out_dir: Path | str, cfg: EvalConfig) -> RunStats:
    """Evaluate a suite against the endpoint; resumable, so calling it again finishes an interrupted run."""
    suite_dir, out_dir = Path(suite_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = suite_fingerprint(suite_dir)
    run_path = out_dir / RUN_FILE
    if run_path.exists():
        previous = json.loads(run_path.read_text())
        same = (previous.get("model"), previous.get("suite_fingerprint"), bool(previous.get("chat")))
        if same != (cfg.model, fingerprint, cfg.chat):
            raise EndpointError(
                f"{out_dir} holds results of model {previous.get('model')!r} "
                f"({'chat' if previous.get('chat') else 'completion'} mode) on suite {previous.get('suite')}; "
                f"use a new --out folder for model {cfg.model!r} on {suite_dir}"
            )
    results = read_results(out_dir / RESULTS_FILE, repair=True)
    done = {sid for sid, row in results.items() if row.get("status") in FINAL_STATUSES}
    meta = read_suite_meta(suite_dir)
    run_info = {
        "model": cfg.model,
        "endpoint": cfg.base_url,
        "chat": cfg.chat,
        "suite": str(suite_dir),
        "suite_fingerprint": fingerprint,
        "tokenizer": meta.get("tokenizer"),
        "sampling": {"temperature": 0.0, "top_p": 1.0, "n": 1, "seed": cfg.seed, **cfg.extra_body},
    }
    write_atomic(run_path, _json_bytes(run_info))
    stats = RunStats()
    total = max(count_suite_lines(suite_dir, meta, cfg) - len(done), 0)
    started = time.monotonic()
    try:
        asyncio.run(_run(suite_dir, out_dir, cfg, done, total, stats))
    finally:
        stats.elapsed_s = round(time.monotonic() - started, 3)
        config = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
        write_atomic(run_path, _json_bytes({**run_info, "config": config, "last_run": asdict(stats)}))
    return stats
