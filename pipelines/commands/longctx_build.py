"""`longtrove longctx build` and `longtrove longctx export lm-eval`: long-context suites at exact token lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _qa_paths(values: list[str] | None) -> dict[str, str]:
    """`--qa-data F` (both QA tasks) or `--qa-data qa_2=F` (one task)."""
    out: dict[str, str] = {}
    for value in values or []:
        task, sep, path = value.partition("=")
        if sep and task in ("qa_1", "qa_2"):
            out[task] = path
        else:
            out.setdefault("qa_1", value)
            out.setdefault("qa_2", value)
    for task, path in out.items():
        if not path.startswith("hf:") and not Path(path).is_file():
            raise typer.BadParameter(f"{path}: no such QA data file (for {task})", param_hint="--qa-data")
    return out


def build_command(
    tokenizer: Annotated[
        str, typer.Option(help="tokenizer.json, a folder with one, a hub id, or a tiktoken encoding.")
    ],
    out: Annotated[Path, typer.Option(help="Output folder: <out>/<task>/<length>.jsonl and suite.json.")],
    tasks: Annotated[
        str, typer.Option(help="all (QA tasks only with --qa-data) or a comma list, e.g. niah_single_1,vt.")
    ] = "all",
    lengths: Annotated[
        str, typer.Option(help="Comma list: 4k,8k,...,1m (powers of two) or integers.")
    ] = "4k,8k,16k,32k,64k,128k,256k,512k,1m",
    depths: Annotated[
        str,
        typer.Option(
            help="Needle depths in percent; sample i uses depth i mod the list (--preset ruler draws them)."
        ),
    ] = "0,25,50,75,100",
    samples: Annotated[
        int | None, typer.Option(help="Samples per task and length (25; 500 with --preset ruler).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="ruler: RULER's benchmark (its 13 tasks, placement, whole units, 500 samples and data: "
            "needs --essays and --qa-data qa_1=SQuAD-v2-dev.json --qa-data qa_2=hotpot-dev-distractor.json)."
        ),
    ] = None,
    essays: Annotated[
        str | None,
        typer.Option(
            help="Paul Graham's essays for the essay tasks: RULER's PaulGrahamEssays.json, a folder of .txt, "
            "file.parquet, file.jsonl or hf:NAME."
        ),
    ] = None,
    cwe_words: Annotated[
        str | None,
        typer.Option(
            help="English word list for cwe where wonderwords is too small (RULER's english_words.json or .txt)."
        ),
    ] = None,
    haystack: Annotated[
        str,
        typer.Option(
            help="default (RULER's per task), noise, essay, a folder, file.parquet, file.jsonl or hf:NAME[:CONFIG]\\[@SPLIT]."
        ),
    ] = "default",
    text_field: Annotated[str, typer.Option(help="Text column of a parquet/jsonl/hf haystack.")] = "text",
    qa_data: Annotated[
        list[str] | None,
        typer.Option(
            help="qa_1=SQuAD v2 dev JSON, qa_2=HotpotQA dev distractor JSON, hf:NAME[:CONFIG]\\[@SPLIT], or a "
            "JSONL of {context, question, answers} (FILE alone: both tasks)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Suite seed; every sample's seed derives from it.")] = 42,
    workers: Annotated[int, typer.Option(help="Worker processes (samples are built in parallel).")] = 1,
    on_short_haystack: Annotated[
        str,
        typer.Option(
            help="repeat (with a note in the sample) or fail, when the haystack is shorter than a length."
        ),
    ] = "repeat",
    chat: Annotated[
        bool, typer.Option(help="Also fit `messages` to the exact length through the chat template.")
    ] = True,
    lm_eval: Annotated[
        Path | None, typer.Option("--lm-eval", help="Also export an lm-evaluation-harness task folder here.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build RULER's tasks at exact token lengths: one JSONL per task and length, and suite.json."""
    import time

    from longctx.ruler_preset import PRESET_SAMPLES
    from longctx.suite import SuiteConfig, build_suite, resolve_tasks
    from longctx.tasks import parse_length
    from tokenization.errors import TokenizerError

    qa = _qa_paths(qa_data)
    try:
        cfg = SuiteConfig(
            tokenizer=tokenizer,
            tasks=resolve_tasks(tasks, qa=True if preset else qa.keys()),
            lengths=[parse_length(x) for x in _split(lengths)],
            depths=[float(x) for x in _split(depths)],
            samples=samples if samples is not None else (PRESET_SAMPLES if preset else 25),
            seed=seed,
            haystack=None if haystack == "default" else haystack,
            qa_data=qa,
            text_field=text_field,
            on_short_haystack=on_short_haystack,
            chat=chat,
            workers=workers,
            preset=preset,
            essays=essays,
            cwe_words=cwe_words,
        )
        cfg.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    left_out = [t for t in ("qa_1", "qa_2") if tasks.strip() == "all" and t not in cfg.tasks]
    if left_out:
        typer.echo(
            f"note: {', '.join(left_out)} left out (no --qa-data); a report of this suite labels its average partial",
            err=True,
        )
    start = time.perf_counter()
    try:
        meta = build_suite(cfg, out, progress=progress)
    except (ValueError, TokenizerError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    seconds = time.perf_counter() - start
    n = sum(f["samples"] for f in meta["files"])
    typer.echo(
        f"built {n} samples in {len(meta['files'])} files ({len(cfg.tasks)} tasks x {len(cfg.lengths)} lengths) "
        f"in {seconds:.1f}s -> {out}"
    )
    if lm_eval is not None:
        from longctx.export_lmeval import export_lm_eval

        summary = export_lm_eval(out, lm_eval)
        typer.echo(
            f"lm-eval task folder: {lm_eval} ({len(summary['tasks'])} tasks, max_length {summary['max_length']})"
        )


def export_lm_eval_command(
    suite: Annotated[Path, typer.Argument(help="A suite folder built by `longtrove longctx build`.")],
    out: Annotated[Path, typer.Option(help="Task folder to write (for lm_eval --include_path).")],
) -> None:
    """Export a suite as an lm-evaluation-harness task folder (YAML per task and length, data, scoring)."""
    from longctx.export_lmeval import export_lm_eval

    try:
        summary = export_lm_eval(suite, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {len(summary['tasks'])} lm-eval tasks to {out}; run:\n{summary['command']}")


def index_command(
    suite: Annotated[Path, typer.Argument(help="A suite folder: <task>/<length>.jsonl files.")],
) -> None:
    """Validate every line of SUITE and write SUITE/offsets.json, which `longctx eval` uses to read only the
    small fields of each line (`longctx build` writes it already; use this for suites made elsewhere or edited)."""
    from longctx.suite_reader import SuiteError, index_suite

    try:
        files = index_suite(suite)
    except SuiteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    lines = sum(len(entry["lines"]) for entry in files.values())
    typer.echo(f"indexed {lines} lines in {len(files)} files -> {suite / 'offsets.json'}")


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach this module's commands to the app."""
    longctx_app.command("build")(build_command)
    longctx_app.command("index")(index_command)
    export_app = typer.Typer(help="Export a built suite for evaluation harnesses.", no_args_is_help=True)
    export_app.command("lm-eval")(export_lm_eval_command)
    longctx_app.add_typer(export_app, name="export")
