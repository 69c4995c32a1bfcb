"""Build a suite: every task at every length, written as `<out>/<task>/<length>.jsonl` plus `<out>/suite.json`.

Samples are independent, so they are built in parallel worker processes, each with its own tokenizer and
haystacks (tokenized once per process). Each sample's random choices come from a seed derived from the suite
seed, the task, the length and the sample's index, so the files are byte-identical for the same arguments
whatever the number of workers. Files are written to a temporary name and renamed; suite.json is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longctx.atomic import write_atomic

SUITE_FORMAT = "longtrove.longctx-suite"
SUITE_VERSION = 1
OFFSETS_FILE = "offsets.json"
OFFSETS_FORMAT = "longtrove.longctx-offsets"
DEFAULT_LENGTHS = tuple(1 << p for p in range(12, 21))  # 4k .. 1m
DEFAULT_DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)


@dataclass
class SuiteConfig:
    """Everything that decides a suite's bytes (plus `workers`, which does not)."""

    tokenizer: str
    tasks: list[str]
    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    depths: list[float] = field(default_factory=lambda: list(DEFAULT_DEPTHS))
    samples: int = 25
    seed: int = 42
    haystack: str | None = None
    qa_data: dict[str, str] = field(default_factory=dict)
    text_field: str = "text"
    on_short_haystack: str = "repeat"
    chat: bool = True
    workers: int = 1
    preset: str | None = None
    essays: str | None = None
    cwe_words: str | None = None

    def validate(self) -> None:
        from longctx.tasks import TASKS

        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
        if self.preset is not None:
            from longctx.qa_data import load_qa
            from longctx.ruler_preset import check_qa_format, check_ruler_data, placement

            placement(self.preset)
            check_ruler_data(self.tasks, essays=self.essays, qa_data=self.qa_data, haystack=self.haystack)
            for task, path in self.qa_data.items():
                if task in self.tasks:  # read here, before any worker starts, so a wrong file is one error
                    check_qa_format(task, load_qa(path).kind, path)
        missing = [t for t in self.tasks if TASKS[t].kind == "qa" and t not in self.qa_data]
        if missing:
            raise ValueError(f"{', '.join(missing)} need QA data: pass --qa-data FILE.jsonl")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")
        if not self.lengths:
            raise ValueError("give at least one length")
        for length in self.lengths:
            short = [t for t in self.tasks if length <= TASKS[t].max_new_tokens]
            if short:
                budget = max(TASKS[t].max_new_tokens for t in short)
                raise ValueError(
                    f"length {length} is not above the answer budget of {', '.join(short)} ({budget} tokens); "
                    "use lengths like 4k,8k,...,1m"
                )
        if not self.depths or any(not 0 <= d <= 100 for d in self.depths):
            raise ValueError("depths are percentages from 0 to 100")
        if self.on_short_haystack not in ("repeat", "fail"):
            raise ValueError("on_short_haystack must be 'repeat' or 'fail'")
        if self.essays and not self.essays.startswith("hf:") and not Path(self.essays).exists():
            raise ValueError(f"{self.essays}: no such essay source (--essays)")
        if self.cwe_words and not Path(self.cwe_words).is_file():
            raise ValueError(f"{self.cwe_words}: no such word list (--cwe-words)")


def resolve_tasks(spec: str, *, qa: Collection[str] | bool = ()) -> list[str]:
    """`all` (the QA tasks that have QA data, `qa`) or a comma-separated list of task names."""
    from longctx.tasks import QA_TASKS, TASKS

    have = set(QA_TASKS) if qa is True else set(qa or ())
    if spec.strip() == "all":
        return [t for t in TASKS if t not in QA_TASKS or t in have]
    return [t.strip() for t in spec.split(",") if t.strip()]


def sample_seed(seed: int, task: str, length: int, index: int) -> int:
    """A per-sample seed that does not depend on which worker builds the sample or in which order."""
    digest = hashlib.sha256(f"{seed}/{task}/{length}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class Job:
    task: str
    length: int
    index: int
    depth: float
    seed: int


def plan(cfg: SuiteConfig) -> list[Job]:
    """All samples, ordered by task, then length, then index; depths cycle through the list."""
    return [
        Job(task, length, i, float(cfg.depths[i % len(cfg.depths)]), sample_seed(cfg.seed, task, length, i))
        for task in cfg.tasks
        for length in cfg.lengths
        for i in range(cfg.samples)
    ]


_WORKER: dict[str, Any] = {}


def _context(cfg: SuiteConfig) -> Any:
    from longctx.drafts import BuildContext
    from longctx.qa_data import load_qa
    from longctx.ruler_preset import placement
    from tokenization import load_tokenizer

    # One thread per process: samples are already spread over processes.
    tok = load_tokenizer(cfg.tokenizer, num_threads=1)
    qa = {task: load_qa(path) for task, path in cfg.qa_data.items() if task in cfg.tasks}
    max_chars = None
    if cfg.haystack not in (None, "noise", "essay"):
        max_chars = max(cfg.lengths) * 12  # far more text than the longest prompt needs
    ctx = BuildContext(
        tok,
        haystack=cfg.haystack,
        qa_data=qa,
        text_field=cfg.text_field,
        on_short_haystack=cfg.on_short_haystack,
        max_haystack_chars=max_chars,
        essays=cfg.essays,
        cwe_words=cfg.cwe_words,
        placement=placement(cfg.preset),
        seed=cfg.seed,
    )
    if not cfg.chat:
        ctx.chat = None
    return ctx


def _init_worker(cfg: SuiteConfig) -> None:
    _WORKER["ctx"] = _context(cfg)


Span = tuple[int, int]


def encode_line(line: dict[str, Any]) -> tuple[bytes, Span | None, Span | None]:
    """The sample as one JSONL line (`json.dumps(line, ensure_ascii=False)`, UTF-8) and the byte spans of its
    `prompt` and `messages` values in it.

    The spans let the runner send a prompt straight from the file and parse only the small fields around it
    (see `offsets.json`). They are known by construction: the two values are serialized on their own and put
    in place of unique placeholders.
    """
    big = [k for k in ("prompt", "messages") if k in line]
    marks = {k: f"\x00{uuid.uuid4().hex}" for k in big}
    text = json.dumps({k: marks.get(k, v) for k, v in line.items()}, ensure_ascii=False)
    spans: dict[str, Span] = {}
    pieces: list[bytes] = []
    size = 0
    for key in sorted(big, key=lambda k: text.index(json.dumps(marks[k]))):
        mark = json.dumps(marks[key])
        head, text = text.split(mark)
        value = json.dumps(line[key], ensure_ascii=False).encode("utf-8")
        pieces += [head.encode("utf-8"), value]
        size += len(pieces[-2])
        spans[key] = (size, size + len(value))
        size += len(value)
    pieces.append(text.encode("utf-8"))
    return b"".join(pieces), spans.get("prompt"), spans.get("messages")


def _build(job: Job) -> tuple[bytes, Span | None, Span | None]:
    from longctx.sample import build_sample
    from longctx.tasks import TASKS

    ctx = _WORKER["ctx"]
    try:
        line = build_sample(ctx, TASKS[job.task], job.length, job.depth, job.seed, job.index)
    except ValueError as exc:
        raise ValueError(
            f"{job.task} at {job.length} tokens, sample {job.index} (seed {job.seed}): {exc}"
        ) from exc
    return encode_line(line)


def _results(cfg: SuiteConfig, jobs: Sequence[Job]) -> Iterator[tuple[bytes, Span | None, Span | None]]:
    if cfg.workers <= 1:
        _init_worker(cfg)
        yield from map(_build, jobs)
        return
    import multiprocessing

    # spawn, not fork: the parent may hold tokenizer threads, and forked Rust thread pools can deadlock.
    with ProcessPoolExecutor(
        cfg.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(cfg,),
    ) as pool:
        yield from pool.map(_build, jobs, chunksize=1)


def build_suite(cfg: SuiteConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Build every sample and write the suite; returns what suite.json holds."""
    from tqdm import tqdm

    from longctx.ruler_preset import placement
    from longctx.tasks import TASKS, format_length

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A rebuilt suite must not look finished before it is: drop the old suite.json first, and the files of
    # an older suite that this one will not rewrite (a reader globbing <task>/<length>.jsonl would mix them in).
    (out / "suite.json").unlink(missing_ok=True)
    (out / OFFSETS_FILE).unlink(missing_ok=True)
    jobs = plan(cfg)
    keep = {f"{j.task}/{format_length(j.length)}.jsonl" for j in jobs}
    for old in out.glob("*/*.jsonl"):
        if old.parent.name in TASKS and f"{old.parent.name}/{old.name}" not in keep:
            old.unlink()
    files: list[dict[str, Any]] = []
    offsets: dict[str, Any] = {}
    current: list[tuple[bytes, Span | None, Span | None]] = []
    key: tuple[str, int] | None = None
    bar = tqdm(total=len(jobs), desc="longctx build", unit="sample", disable=not progress)

    def flush() -> None:
        assert key is not None
        task, length = key
        rel = f"{task}/{format_length(length)}.jsonl"
        data = b"".join(line + b"\n" for line, _, _ in current)
        write_atomic(out / rel, data)
        offsets[rel] = offsets_entry(out / rel, _line_rows(current))
        files.append(
            {
                "task": task,
                "length": length,
                "path": rel,
                "samples": len(current),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    with bar:
        for job, line in zip(jobs, _results(cfg, jobs), strict=True):
            if key != (job.task, job.length):
                if current:
                    flush()
                key, current = (job.task, job.length), []
            current.append(line)
            bar.update(1)
        if current:
            flush()
    ctx_tok = _tokenizer_meta(cfg)
    meta = {
        "format": SUITE_FORMAT,
        "version": SUITE_VERSION,
        "tokenizer": ctx_tok,
        "tasks": {
            t: {
                "kind": TASKS[t].kind,
                "max_new_tokens": TASKS[t].max_new_tokens,
                "metric": TASKS[t].metric,
                "args": TASKS[t].args,
            }
            for t in cfg.tasks
        },
        "lengths": list(cfg.lengths),
        "depths": list(cfg.depths),
        "samples": cfg.samples,
        "seed": cfg.seed,
        "haystack": cfg.haystack or "default",
        "qa_data": {t: _source_name(p) for t, p in sorted(cfg.qa_data.items())},
        "on_short_haystack": cfg.on_short_haystack,
        "chat": ctx_tok["chat_template"] and cfg.chat,
        "preset": cfg.preset,
        "placement": dataclasses.asdict(placement(cfg.preset)),
        "essays": _source_name(cfg.essays),
        "cwe_words": _source_name(cfg.cwe_words),
        "files": files,
    }
    write_offsets(out, offsets)
    write_atomic(out / "suite.json", (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return meta


def _source_name(spec: str | None) -> str | None:
    return spec if spec is None or spec.startswith("hf:") else Path(spec).name


def _line_rows(lines: Sequence[tuple[bytes, Span | None, Span | None]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = 0
    for number, (line, prompt, messages) in enumerate(lines, 1):
        row: dict[str, Any] = {"line": number, "start": start, "end": start + len(line)}
        for name, span in (("prompt", prompt), ("messages", messages)):
            if span is not None:
                row[name] = [start + span[0], start + span[1]]
        rows.append(row)
        start += len(line) + 1
    return rows


def offsets_entry(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """offsets.json's entry for one file: where each line and its `prompt` and `messages` values sit, with the
    file's size and modification time, so that an edited or replaced file no longer matches."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "lines": rows}


def write_offsets(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    index = {"format": OFFSETS_FORMAT, "version": 1, "files": files}
    write_atomic(folder / OFFSETS_FILE, json.dumps(index, separators=(",", ":")).encode("utf-8") + b"\n")


def _tokenizer_meta(cfg: SuiteConfig) -> dict[str, Any]:
    from tokenization import load_tokenizer

    tok = _WORKER["ctx"].tok if "ctx" in _WORKER else load_tokenizer(cfg.tokenizer, num_threads=1)
    return {
        "name": tok.name,
        "fingerprint": tok.fingerprint,
        "backend": tok.backend,
        "vocab_size": tok.vocab_size,
        "chat_template": tok.chat_template is not None,
    }


def read_suite(folder: str | Path) -> dict[str, Any]:
    """suite.json of a built suite, checked for format and version (naming the file on error)."""
    path = Path(folder) / "suite.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: no suite.json (build the suite with `longtrove longctx build`)") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("format") != SUITE_FORMAT or meta.get("version") != SUITE_VERSION:
        raise ValueError(f"{path}: not a {SUITE_FORMAT} v{SUITE_VERSION} file")
    for f in meta.get("files", []):
        p = f.get("path", "")
        if Path(p).is_absolute() or ".." in Path(p).parts:
            raise ValueError(f"{path}: file path {p!r} must be relative without '..'")
    return meta
