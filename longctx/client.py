"""The runner: sends a long-context suite to an OpenAI-compatible endpoint and records answers.

Built for hours-long runs with prompts of up to a million tokens against endpoints that time out, rate-limit and
restart: every response is appended to `results.jsonl` as soon as it arrives (`results_file`), a rerun sends
only the samples without a final result, transient failures are retried with exponential backoff and jitter
(`transport`), and a prompt the server rejects as too long is recorded as such instead of being retried forever.
Sampling parameters are always sent explicitly (greedy), never left to server defaults (`request_body`).

The runner stays far cheaper than the server: prompts go from the suite file into the request body in one copy,
never decoded into Python strings, and for a suite built by `longctx.suite` (with its offsets.json) only the few
small fields of each line are parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import tenacity

from longctx.atomic import write_atomic
from longctx.eval_config import EvalConfig, RunStats
from longctx.request_body import body_with_prompt, build_request, chat_messages
from longctx.results_file import FINAL_STATUSES, RESULTS_FILE, ResultWriter, read_results
from longctx.run_record import RUN_FILE, check_same_run, count_suite_lines, json_bytes, suite_fingerprint
from longctx.scoring import metric_name, score_sample
from longctx.suite_reader import SuiteError, iter_suite, read_suite_meta
from longctx.transport import (
    TOO_LONG,
    TRANSIENT,
    BackoffHonouringRetryAfter,
    EndpointError,
    TransientHTTPError,
    extract_reply,
    is_transient,
    proxy_for,
    reply_count,
    reply_text,
    retry_after,
)

# Names other modules and older callers import from here.
__all__ = [
    "FINAL_STATUSES",
    "RESULTS_FILE",
    "RUN_FILE",
    "EndpointError",
    "EvalConfig",
    "ResultWriter",
    "RunStats",
    "SuiteError",
    "build_request",
    "proxy_for",
    "read_results",
    "run_eval",
]

log = logging.getLogger(__name__)


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
                raise TransientHTTPError(status, reply_text(content), retry_after(response.headers))
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
            retry=tenacity.retry_if_exception(is_transient),
            wait=BackoffHonouringRetryAfter(cfg.retry_wait_base, cfg.retry_wait_max),
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
                        text, finish, usage = extract_reply(content, cfg.chat)
                    else:
                        text, finish, usage = "", None, {}
        except TRANSIENT as exc:
            row.update(status="error", output="", error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            reply = reply_text(content)
            if status == 200:
                row.update(
                    status="ok",
                    output=text,
                    finish_reason=finish,
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens"),
                )
            elif status in (400, 413, 422) and (status == 413 or TOO_LONG.search(reply)):
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
            content = orjson.dumps(body) if cfg.chat else body_with_prompt(body, sample)
            status, reply = await self.post("/tokenize", content, cfg.request_timeout(int(expected)))
            server_count = reply_count(reply) if status == 200 else None
        except (*TRANSIENT, ValueError, AttributeError) as exc:
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
    check_same_run(out_dir, cfg, suite_dir, fingerprint)
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
    write_atomic(run_path, json_bytes(run_info))
    stats = RunStats()
    total = max(count_suite_lines(suite_dir, meta, cfg) - len(done), 0)
    started = time.monotonic()
    try:
        asyncio.run(_run(suite_dir, out_dir, cfg, done, total, stats))
    finally:
        stats.elapsed_s = round(time.monotonic() - started, 3)
        config = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
        write_atomic(run_path, json_bytes({**run_info, "config": config, "last_run": asdict(stats)}))
    return stats
