"""`longtrove longctx eval | report | serve-reference`: run a suite against a served model and report scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _parse_length(text: str) -> int:
    text = text.strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def eval_command(
    suite: Annotated[Path, typer.Argument(help="Suite folder written by `longtrove longctx build`.")],
    endpoint: Annotated[str, typer.Option(help="Server root or its /v1 URL, e.g. http://localhost:8000/v1.")],
    model: Annotated[str, typer.Option(help="Model name the server serves.")],
    out: Annotated[
        Path, typer.Option(help="Results folder; rerunning with it sends only unanswered samples.")
    ],
    chat: Annotated[bool, typer.Option("--chat", help="Send `messages` to /v1/chat/completions.")] = False,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 4,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key.")
    ] = "OPENAI_API_KEY",
    first_byte_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds until the first token of a reply to an empty prompt: time queued in the server and "
            "prompt processing."
        ),
    ] = 120.0,
    first_byte_per_1k_tokens: Annotated[
        float, typer.Option(help="Extra first-byte seconds per 1,000 prompt tokens.")
    ] = 0.5,
    generation_timeout: Annotated[
        float, typer.Option(help="Seconds from the first token to the end of the answer.")
    ] = 120.0,
    stream: Annotated[
        str,
        typer.Option(
            help="auto: stream replies when the server puts usage in a streamed reply, so the two limits are "
            "timed apart; off: never; on: always (refuse a server that cannot)."
        ),
    ] = "auto",
    max_attempts: Annotated[int, typer.Option(help="Attempts per sample on transient errors.")] = 10,
    retry_wait_base: Annotated[float, typer.Option(help="Backoff multiplier (seconds).")] = 1.0,
    retry_wait_max: Annotated[float, typer.Option(help="Longest wait between attempts (seconds).")] = 60.0,
    seed: Annotated[
        int | None, typer.Option(help="Sampling seed for every request (default: each sample's).")
    ] = None,
    extra_body: Annotated[str | None, typer.Option(help="JSON object merged into each request body.")] = None,
    tasks: Annotated[str | None, typer.Option(help="Only these tasks (comma-separated).")] = None,
    lengths: Annotated[
        str | None, typer.Option(help="Only these lengths (comma-separated, e.g. 4k,128k).")
    ] = None,
    check_tokenize: Annotated[
        bool, typer.Option(help="Compare the server's token counts (/tokenize or its like) with the suite's.")
    ] = True,
    check_model: Annotated[
        bool,
        typer.Option(help="Require --model in the server's /v1/models (off for proxies that list none)."),
    ] = True,
    allow_over_context: Annotated[
        bool,
        typer.Option(
            "--allow-over-context",
            help="Send lengths longer than the server's context anyway and record the refusals.",
        ),
    ] = False,
    max_flagged: Annotated[
        int,
        typer.Option(help="Replies marked prompt_mismatch, budget_cut or no_usage (of one kind) that stop the run."),
    ] = 3,
    outage_window: Annotated[
        float, typer.Option(help="Seconds the server may stay unreachable mid-run before the run gives up.")
    ] = 300.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
) -> None:
    """Send every sample of SUITE to an OpenAI-compatible endpoint (greedy), appending answers to OUT/results.jsonl."""
    from longctx.client import EndpointError, EvalConfig, ServerUnreachable, SuiteError, run_eval

    try:
        body = json.loads(extra_body) if extra_body else {}
        if not isinstance(body, dict):
            raise ValueError("--extra-body must be a JSON object")
        cfg = EvalConfig(
            endpoint=endpoint,
            model=model,
            chat=chat,
            concurrency=concurrency,
            api_key_env=api_key_env,
            first_byte_timeout=first_byte_timeout,
            first_byte_per_1k_tokens=first_byte_per_1k_tokens,
            generation_timeout=generation_timeout,
            stream=stream,
            max_attempts=max_attempts,
            retry_wait_base=retry_wait_base,
            retry_wait_max=retry_wait_max,
            seed=seed,
            extra_body=body,
            tasks=tuple(_csv(tasks)) if tasks else None,
            lengths=tuple(_parse_length(n) for n in _csv(lengths) or []) if lengths else None,
            check_tokenize=check_tokenize,
            check_model=check_model,
            check_context=not allow_over_context,
            max_flagged=max_flagged,
            outage_window=outage_window,
            progress=progress,
        )
        stats = run_eval(suite, out, cfg, announce=lambda line: typer.echo(line, err=True))
    except ServerUnreachable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (ValueError, SuiteError, EndpointError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    flagged = stats.prompt_mismatch + stats.budget_cut + stats.no_usage
    typer.echo(
        f"{stats.samples} samples: {stats.skipped_done} already answered, {stats.sent} sent "
        f"({stats.ok} answered, {stats.too_long} too long, {stats.failed} failed"
        + (
            f", {stats.prompt_mismatch} prompt_mismatch, {stats.budget_cut} budget_cut, {stats.no_usage} no_usage"
            if flagged
            else ""
        )
        + f") with {stats.retries} retries"
        + (f" and {stats.outages} outage(s) ({stats.outage_s:.0f} s)" if stats.outages else "")
        + f" in {stats.elapsed_s:.1f} s; results in {out / 'results.jsonl'}"
    )
    mismatches = [c for c in stats.tokenize_checks if c.get("match") is False]
    if mismatches:
        typer.echo(
            f"warning: {len(mismatches)} /tokenize check(s) disagree with the suite's token counts", err=True
        )
    if report and (stats.ok or stats.too_long or stats.skipped_done or flagged):
        from longctx.report import write_report

        summary = write_report(out)
        typer.echo(f"report: {out / 'summary.json'}, {out / 'report.md'}; average {summary['average']}")
    if flagged:
        typer.echo(
            f"{flagged} answer(s) marked prompt_mismatch, budget_cut or no_usage and scored 0: the server did not "
            "run them as built, or did not say (see the rows' prompt_tokens and completion_tokens); rerun the same "
            "command after fixing the server to send them again",
            err=True,
        )
    if stats.failed:
        typer.echo(
            f"{stats.failed} sample(s) without an answer: run the same command again to retry them", err=True
        )
    if stats.failed or flagged:
        raise typer.Exit(1)


def report_command(
    results: Annotated[Path, typer.Argument(help="Folder written by `longtrove longctx eval`.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the report (default: the results folder).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name for the report (default: from run.json).")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Average score a length must exceed (RULER: 85.6).")
    ] = 85.6,
    plots: Annotated[bool, typer.Option(help="Write the heatmaps and the score plot.")] = True,
) -> None:
    """Score RESULTS as RULER does: summary.json, report.md, a depth x length heatmap per task, a score plot."""
    from longctx.client import SuiteError
    from longctx.report import markdown_table, write_report

    try:
        summary = write_report(results, out_dir=out, model=model, threshold=threshold, plots=plots)
    except (FileNotFoundError, ValueError, SuiteError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(markdown_table(summary), nl=False)


def serve_reference_command(
    tokenizer: Annotated[
        str, typer.Option(help="The suite's tokenizer (tokenizer.json, folder, hub id or tiktoken name).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    model_name: Annotated[str, typer.Option(help="Model name to serve.")] = "reference",
    window_tokens: Annotated[
        int, typer.Option(help="The model reads only the last K tokens of each prompt.")
    ] = 4096,
    max_model_len: Annotated[
        int | None, typer.Option(help="Refuse longer prompts with HTTP 400, as vLLM does.")
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the key held in this environment variable.")
    ] = None,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered 500 or 429.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Fraction of connections dropped without a reply.")] = 0.0,
    delay_rate: Annotated[float, typer.Option(help="Fraction of replies delayed by --delay seconds.")] = 0.0,
    delay: Annotated[float, typer.Option(help="Delay of the delayed replies (seconds).")] = 5.0,
    malformed_rate: Annotated[
        float, typer.Option(help="Fraction of requests answered 200 with a body that is not a completion.")
    ] = 0.0,
    stall_rate: Annotated[
        float,
        typer.Option(
            help="Fraction of replies held --delay seconds after their first event (streamed) or headers."
        ),
    ] = 0.0,
    fault_seed: Annotated[int, typer.Option(help="Seed of the injected faults.")] = 0,
    latency: Annotated[
        float, typer.Option(help="Seconds every answer is held back (a model's own time).")
    ] = 0.0,
    verbose: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve a reference model on an OpenAI-compatible API, to check a set-up before using a GPU server."""
    import os

    from longctx.reference_server import Faults, ReferenceServer
    from tokenization import load_tokenizer

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            typer.echo(f"error: environment variable {api_key_env} is empty", err=True)
            raise typer.Exit(2)
    try:
        faults = Faults(
            error_rate=error_rate,
            drop_rate=drop_rate,
            delay_rate=delay_rate,
            delay_s=delay,
            malformed_rate=malformed_rate,
            stall_rate=stall_rate,
            seed=fault_seed,
        )
        server = ReferenceServer(
            load_tokenizer(tokenizer),
            model_name=model_name,
            window_tokens=window_tokens,
            max_model_len=max_model_len,
            faults=faults,
            host=host,
            port=port,
            api_key=api_key,
            verbose=verbose,
            latency_s=latency,
        )
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"serving {model_name!r} (reads the last {window_tokens} tokens) on {server.url}/v1", err=True)
    # A line on stdout that scripts can wait for.
    typer.echo(f"READY {server.url}", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach this module's commands to the app."""
    longctx_app.command("eval")(eval_command)
    longctx_app.command("report")(report_command)
    longctx_app.command("serve-reference")(serve_reference_command)
