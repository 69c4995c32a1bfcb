"""Export a built suite as an lm-evaluation-harness task folder (`lm_eval --include_path DIR`).

The folder holds one YAML per task and length (task `longtrove_<task>_<length>`, tagged `longtrove_longctx`
and `longtrove_<task>`), the samples under `data/`, and a small `utils.py` that loads them and scores with
RULER's string_match_all / string_match_part. Each prompt goes out exactly as the suite built it: the whole
completion-mode text (answer prefix included) is `doc_to_text`, with no target delimiter, no few-shot examples
and greedy generation of the task's answer budget.

Groups average the tasks as RULER does, each task counting once whatever its number of samples: one group
per length (`longtrove_ruler_<length>`, RULER's average at that length) and `longtrove_ruler` over the
per-length groups, so that `lm_eval` prints the RULER average itself. A length without all 13 tasks gets
`longtrove_partial_<length>` instead (and the overall group `longtrove_partial`), so a partial average is never
printed under RULER's name.

lm-eval's API models left-truncate to `max_length` (2048 by default) when they tokenize requests; the folder's
README gives the command line with `max_length` set from the suite and `tokenized_requests=False`, so that
nothing is cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longctx.atomic import write_atomic
from longctx.suite import read_suite
from longctx.tasks import RULER_TASKS

TAG = "longtrove_longctx"

UTILS_PY = '''"""Loading and scoring for the longtrove long-context tasks (written by `longtrove longctx export lm-eval`)."""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_data(data_file, **kwargs):
    """The samples of one task and length, as the `test` split."""
    import datasets

    rows = []
    with open(HERE / data_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return {"test": datasets.Dataset.from_list(rows)}


def postprocess_pred(text):
    """RULER's post-processing: drop control characters, keep the text."""
    text = text.strip()
    return re.sub(r"[\\x00-\\x1f]", "\\n", text).strip()


def string_match_all(prediction, references):
    """Fraction of the references found in the prediction (case-insensitive), as RULER scores retrieval."""
    pred = postprocess_pred(prediction).lower()
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction, references):
    """1 if any reference is found in the prediction (case-insensitive), as RULER scores QA."""
    pred = postprocess_pred(prediction).lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in references)


def process_results_all(doc, results):
    return {"score": 100.0 * string_match_all(results[0], doc["references"])}


def process_results_part(doc, results):
    return {"score": 100.0 * string_match_part(results[0], doc["references"])}
'''


def _yaml(task: str, length_name: str, length: int, max_new_tokens: int, metric: str, data_file: str) -> str:
    """One task YAML; written by hand (json strings are valid YAML scalars) so the key order is fixed."""
    process = "process_results_part" if metric == "string_match_part" else "process_results_all"
    name = f"longtrove_{task}_{length_name}"
    lines = [
        f"task: {name}",
        "tag:",
        f"  - {TAG}",
        f"  - longtrove_{task}",
        'dataset_path: ""',
        "dataset_kwargs:",
        f"  data_file: {json.dumps(data_file)}",
        "custom_dataset: !function utils.load_data",
        "output_type: generate_until",
        "test_split: test",
        "num_fewshot: 0",
        'doc_to_text: "{{prompt}}"',
        'doc_to_target: "{{references}}"',
        'target_delimiter: ""',
        f"process_results: !function utils.{process}",
        "metric_list:",
        "  - metric: score",
        "    aggregation: mean",
        "    higher_is_better: true",
        "generation_kwargs:",
        "  until: []",
        f"  max_gen_toks: {max_new_tokens}",
        "  do_sample: false",
        "  temperature: 0.0",
        "repeats: 1",
        "metadata:",
        "  version: 1.0",
        f"  length: {length}",
        "",
    ]
    return "\n".join(lines)


def _group_yaml(name: str, members: list[str]) -> str:
    """A group whose score is the unweighted mean of its members' scores (RULER's average of task columns)."""
    lines = [f"group: {name}", "task:", *(f"  - {m}" for m in members)]
    lines += [
        "aggregate_metric_list:",
        "  - metric: score",
        "    aggregation: mean",
        "    weight_by_size: false",
        "metadata:",
        "  version: 1.0",
        "",
    ]
    return "\n".join(lines)


def _write_groups(out: Path, by_length: dict[str, list[str]]) -> list[str]:
    """One group per length and one over them; named RULER's only where all 13 tasks are there."""
    length_groups = []
    for length_name, tasks in by_length.items():
        complete = all(t in tasks for t in RULER_TASKS)
        name = f"longtrove_{'ruler' if complete else 'partial'}_{length_name}"
        members = [f"longtrove_{t}_{length_name}" for t in sorted(tasks, key=_task_order)]
        write_atomic(out / f"{name}.yaml", _group_yaml(name, members).encode("utf-8"))
        length_groups.append(name)
    overall = (
        "longtrove_ruler"
        if all(g.startswith("longtrove_ruler_") for g in length_groups)
        else "longtrove_partial"
    )
    write_atomic(out / f"{overall}.yaml", _group_yaml(overall, length_groups).encode("utf-8"))
    return [*length_groups, overall]


def _task_order(task: str) -> int:
    return RULER_TASKS.index(task) if task in RULER_TASKS else len(RULER_TASKS)


def _slim(line: str) -> bytes:
    """Only what lm-eval needs from a sample (the prompt is by far the largest part and is kept verbatim)."""
    s = json.loads(line)
    keep = {
        k: s[k] for k in ("id", "task", "length", "prompt", "references", "token_count", "depth") if k in s
    }
    return (json.dumps(keep, ensure_ascii=False) + "\n").encode("utf-8")


def export_lm_eval(suite: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the task folder for `suite` into `out`; returns a summary (tasks written, max_length)."""
    suite = Path(suite)
    out = Path(out)
    meta = read_suite(suite)
    tasks_meta = meta["tasks"]
    written: list[str] = []
    by_length: dict[str, list[str]] = {}
    max_length = 0
    for f in meta["files"]:
        task, length = f["task"], int(f["length"])
        src = suite / f["path"]
        if not src.is_file():
            raise ValueError(f"{src}: listed in {suite / 'suite.json'} but missing")
        length_name = Path(f["path"]).stem
        data_file = f"data/{task}/{length_name}.jsonl"
        with open(src, encoding="utf-8") as fh:
            data = b"".join(_slim(line) for line in fh if line.strip())
        write_atomic(out / data_file, data)
        tm = tasks_meta[task]
        yaml = _yaml(task, length_name, length, int(tm["max_new_tokens"]), tm["metric"], data_file)
        write_atomic(out / f"longtrove_{task}_{length_name}.yaml", yaml.encode("utf-8"))
        written.append(f"longtrove_{task}_{length_name}")
        by_length.setdefault(length_name, []).append(task)
        max_length = max(max_length, length)
    for stale in out.glob("longtrove_*.yaml"):  # groups or tasks of an earlier export into the same folder
        if stale.stem not in written:
            stale.unlink()
    groups = _write_groups(out, by_length)
    write_atomic(out / "utils.py", UTILS_PY.encode("utf-8"))
    command = (
        f"lm_eval --model local-completions --include_path {out} --tasks {groups[-1]} "
        f"--model_args base_url=http://HOST:PORT/v1/completions,model=MODEL,max_length={max_length},"
        "tokenized_requests=False,tokenizer_backend=None"
    )
    readme = (
        "# longtrove long-context tasks for lm-evaluation-harness\n\n"
        f"Exported from a suite built with tokenizer `{meta['tokenizer']['name']}` "
        f"(fingerprint `{meta['tokenizer']['fingerprint'][:16]}...`). Each prompt has exactly the token count the "
        "suite records for that tokenizer; the answer budget is each task's `max_gen_toks`.\n\n"
        f"Run (max_length {max_length} covers the longest prompt and its answer, so lm-eval truncates nothing):\n\n"
        f"```bash\n{command}\n```\n\n"
        f"Groups (the unweighted mean of their tasks, as RULER averages): "
        + ", ".join(f"`{g}`" for g in groups)
        + ". A `longtrove_partial_*` group lacks some of RULER's 13 tasks, so its mean is not RULER's average.\n\n"
        f"Tasks: `{TAG}` (all), `longtrove_<task>` (one task, all lengths), or one of:\n\n"
        + "".join(f"- `{t}`\n" for t in written)
    )
    write_atomic(out / "README.md", readme.encode("utf-8"))
    summary = {"tasks": written, "groups": groups, "max_length": max_length, "command": command}
    write_atomic(out / "longtrove_export.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary
