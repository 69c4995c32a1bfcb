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
import tenacity

from longctx.atomic import write_atomic
from longctx.eval_config import EvalConfig, RunStats
from longctx.outage import OutageBreaker
from longctx.preflight import ServerFacts, count_tokens, describe, preflight
from longctx.reply_checks import FLAGS, ReplyChecks, RunStopped
from longctx.request_body import build_request
from longctx.results_file import FINAL_STATUSES, RESULTS_FILE, ResultWriter, read_results
from longctx.run_record import RUN_FILE, check_same_run, count_suite_lines, json_bytes, suite_fingerprint
from longctx.scoring import metric_name, score_sample
from longctx.suite_reader import SuiteError, iter_suite, length_of_name, read_suite_meta, suite_files
from longctx.transport import (
    TOO_LONG,
    TRANSIENT,
    BackoffHonouringRetryAfter,
    EndpointError,
    HttpClient,
    ServerUnreachable,
    extract_reply,
    is_transient,
    proxy_for,
    reply_text,
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
        http: HttpClient,
        facts: ServerFacts,
        writer: ResultWriter,
        stats: RunStats,
        progress: Any,
    ) -> None:
        self.cfg = cfg
        self.http = http
        self.facts = facts
        self.checks = ReplyChecks(cfg, facts.bos)
        self.writer = writer
        self.stats = stats
        self.progress = progress
        self.breaker = OutageBreaker(
            http.base_url, self.server_answers, cfg.outage_window, cfg.probe_every, say=self.say
        )
        self.started = time.monotonic()

    async def server_answers(self) -> bool:
        """The outage probe: any HTTP answer on /v1/models means the server is back."""
        await self.http.get("/v1/models", min(10.0, self.cfg.connect_timeout))
        return True

    def say(self, message: str) -> None:
        """A line for the user, above the progress bar when there is one."""
        if self.progress is not None:
            self.progress.write(message)
        else:
            log.warning(message)

    @property
    def can_check_tokens(self) -> bool:
        route = self.facts.tokenize
        return route is not None and (route.takes_messages or not self.cfg.chat)

    def _on_retry(self, retry_state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        self._refresh()

    def _refresh(self) -> None:
        if self.progress is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        postfix = {
            "tok/s": f"{self.stats.tokens_sent / elapsed:,.0f}",
            "retries": self.stats.retries,
            "failed": self.stats.failed,
            "too_long": self.stats.too_long,
        }
        for mark, n in self.checks.flagged.items():
            postfix[mark] = n
        self.progress.set_postfix(postfix, refresh=False)

    async def send(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Send one sample until it has a final answer or the attempts run out; return its result line."""
        cfg = self.cfg
        streamed = self.facts.stream
        route, body = build_request(sample, cfg, streamed)
        tokens = int(sample.get("token_count") or 0)
        limits = cfg.reply_limits(tokens)
        row: dict[str, Any] = {
            "id": sample["id"],
            "task": sample["task"],
            "length": int(sample["length"]),
            "depth": sample.get("depth"),
            "token_count": tokens,
            "references": sample["references"],
            "metric": sample.get("metric") or metric_name(sample["task"]),
        }
        if cfg.chat and sample.get("chat_token_count") is not None:
            row["chat_token_count"] = int(sample["chat_token_count"])
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
                    status, content, first_byte_s, generation_s = await self.breaker.call(
                        lambda: self.http.post_reply(route, body, limits, streamed)
                    )
                    if status == 200:
                        text, finish, usage = extract_reply(content, cfg.chat, streamed=streamed)
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
                row["status"] = self.checks.flag(row, sample) or "ok"
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
        if streamed and row["status"] != "error":
            row["first_byte_s"], row["generation_s"] = first_byte_s, generation_s
        row["score"] = (
            score_sample(row["task"], row["output"], row["references"], metric=row["metric"])
            if row["status"] == "ok"
            else 0.0
        )
        return row

    def record(self, row: dict[str, Any], sample: dict[str, Any]) -> None:
        """Append the row to the results file and count it; a sample killed before this is sent again next run.
        A marked row (prompt_mismatch, budget_cut, no_usage) is kept but not final, and enough of them stop the run."""
        self.writer.write(row)
        self.stats.sent += 1
        status = row["status"]
        if status == "ok":
            self.stats.ok += 1
            self.stats.tokens_sent += row["token_count"]
        elif status == "too_long":
            self.stats.too_long += 1
        elif status in FLAGS:
            setattr(self.stats, status, getattr(self.stats, status) + 1)
        else:
            self.stats.failed += 1
            self.say(f"{row['id']}: failed after {row['attempts']} attempts: {row.get('error')}")
        if self.progress is not None:
            self._refresh()
            self.progress.update(1)
        if status in FLAGS:
            self.checks.count(status, row, sample)

    async def check_tokenize(self, sample: dict[str, Any]) -> None:
        """Compare the server's token count of a prompt with the suite's; warn when they disagree."""
        cfg, route = self.cfg, self.facts.tokenize
        expected = self.checks.expected_prompt_tokens(sample)
        if route is None or expected is None:
            return
        check: dict[str, Any] = {"length": int(sample["length"]), "id": sample["id"], "suite": expected}
        try:
            count = await count_tokens(
                self.http, route, cfg, sample=sample, timeout=cfg.tokenize_timeout(expected)
            )
        except (*TRANSIENT, ValueError, AttributeError) as exc:
            check.update(server=None, match=None, note=f"{route.path} failed: {type(exc).__name__}")
            self.stats.tokenize_checks.append(check)
            return
        if count is None:
            check.update(server=None, match=None, note=f"{route.path} did not answer a count")
            self.stats.tokenize_checks.append(check)
            return
        if route.counts_bos and not cfg.chat:
            count -= self.facts.bos or 0
        check.update(server=count, match=count == expected)
        self.stats.tokenize_checks.append(check)
        if not check["match"]:
            message = (
                f"warning: the server counts {count} tokens for {sample['id']} (length {sample['length']}) "
                f"where the suite measured {expected}: suite and server disagree on the tokenizer or template"
            )
            if self.progress is not None:
                self.progress.write(message)
            log.warning(message)


class _Feed:
    """The samples still to send, shared by the workers: each takes the next one when it is free.

    Reading is synchronous (a few small fields per line, or about a millisecond per 100K tokens for a line
    validated in full), so workers never interleave inside it. The server's token count of the first sample
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
            if cfg.check_tokenize and self.runner.can_check_tokens and length not in self.checked:
                self.checked.add(length)
                self.checks.append(asyncio.create_task(self.runner.check_tokenize(sample)))
            return sample
        return None


def _context_needs(suite_dir: Path, cfg: EvalConfig) -> dict[int, int]:
    """Each length to be sent and the tokens its requests take before the server's BOS: the length itself
    (prompt plus answer budget), plus in chat mode what the chat template adds (measured on the first sample)."""
    lengths = {
        length_of_name(p.stem)
        for p in suite_files(suite_dir)
        if cfg.tasks is None or p.parent.name in cfg.tasks
    }
    wanted = sorted(n for n in lengths if n is not None and (cfg.lengths is None or n in cfg.lengths))
    overhead = 0
    if cfg.chat:
        first = next(iter_suite(suite_dir, chat=True), None)
        if first is not None and first.get("chat_token_count") is not None:
            overhead = max(0, int(first["chat_token_count"]) - int(first.get("token_count") or 0))
    return {n: n + overhead for n in wanted}


def _headers(cfg: EvalConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    api_key = os.environ.get(cfg.api_key_env)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def _run(
    suite_dir: Path,
    out_dir: Path,
    cfg: EvalConfig,
    run_info: dict[str, Any],
    stats: RunStats,
    announce: Any,
) -> None:
    from tqdm.auto import tqdm

    # One connection per worker plus the token-count check; aiohttp sets TCP_NODELAY, so a body never waits
    # behind its headers for the server's delayed ACK.
    connector = aiohttp.TCPConnector(limit=cfg.concurrency + 1)
    async with aiohttp.ClientSession(connector=connector) as session:
        http = HttpClient(session, cfg.base_url, _headers(cfg))
        facts = await preflight(http, cfg, _context_needs(suite_dir, cfg))
        stats.server = facts.as_record()
        announce(describe(facts, cfg))

        # Only now, with a server that can run the suite, does the results folder come into being.
        out_dir.mkdir(parents=True, exist_ok=True)
        results = read_results(out_dir / RESULTS_FILE, repair=True)
        done = {sid for sid, row in results.items() if row.get("status") in FINAL_STATUSES}
        write_atomic(out_dir / RUN_FILE, json_bytes(run_info))
        total = max(count_suite_lines(suite_dir, read_suite_meta(suite_dir), cfg) - len(done), 0)
        progress = tqdm(
            total=total, desc="longctx eval", unit="sample", disable=not cfg.progress, dynamic_ncols=True
        )
        writer = ResultWriter(out_dir / RESULTS_FILE)
        runner = Runner(cfg, http, facts, writer, stats, progress if cfg.progress else None)
        feed = _Feed(iter_suite(suite_dir, chat=cfg.chat), cfg, done, stats, runner)

        async def work() -> None:
            while (sample := feed.next()) is not None:
                runner.record(await runner.send(sample), sample)

        workers = [
            asyncio.create_task(work()) for _ in range(min(cfg.concurrency, facts.slots or cfg.concurrency))
        ]
        try:
            # A worker that fails (the endpoint refuses everything, the server stays down, too many marked
            # replies, a bad suite line) stops the others.
            finished, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                task.result()
            await asyncio.gather(*feed.checks)
        finally:
            for task in (*workers, *feed.checks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, *feed.checks, return_exceptions=True)
            await runner.breaker.close()
            stats.outages, stats.outage_s = runner.breaker.outages, round(runner.breaker.down_s, 3)
            writer.close()
            progress.close()


def run_eval(
    suite_dir: Path | str, out_dir: Path | str, cfg: EvalConfig, *, announce: Any = None
) -> RunStats:
    """Evaluate a suite against the endpoint; resumable, so calling it again finishes an interrupted run.

    Nothing is written before the suite is found and the server has passed the preflight; `announce` gets
    the line saying what the preflight checked (default: the log).
    """
    suite_dir, out_dir = Path(suite_dir), Path(out_dir)
    suite_files(suite_dir)  # a missing or empty suite is an error before anything else
    fingerprint = suite_fingerprint(suite_dir)
    check_same_run(out_dir, cfg, suite_dir, fingerprint)
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
    stats = RunStats()
    started = time.monotonic()
    stopped = None
    try:
        asyncio.run(_run(suite_dir, out_dir, cfg, run_info, stats, announce or log.info))
    except (RunStopped, ServerUnreachable) as exc:
        stopped = str(exc)
        raise
    finally:
        stats.elapsed_s = round(time.monotonic() - started, 3)
        if (out_dir / RUN_FILE).exists():
            config = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
            last_run = {**asdict(stats), "stopped": stopped}
            write_atomic(out_dir / RUN_FILE, json_bytes({**run_info, "config": config, "last_run": last_run}))
    return stats


__all__ += ["RunStopped", "ServerUnreachable"]
