"""The RULER preset (`longctx build --preset ruler`): RULER's benchmark as a named configuration of the task
generators, so that its scores can sit beside a published RULER number.

It takes RULER's 13 tasks with synthetic.yaml's arguments, 500 samples per task and length (config_tasks.sh),
RULER's placement (`RULER_PLACEMENT`: drawn needle depths, vt chains spread over the context, cwe/fwe lists
with exact frequencies and never cut, whole units only) and RULER's data: Paul Graham's essays, the SQuAD v2
and HotpotQA dev files in their original formats, and, where cwe needs more words than wonderwords holds, the
English word list. Without the data it refuses to build rather than build a different benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from longctx.drafts import Placement
from longctx.essays import HOW_TO_GET
from longctx.tasks import RULER_TASKS, TASKS

RULER_PLACEMENT = Placement(
    drawn_depths=True,
    spread_chains=True,
    exact_lists=True,
    whole_units=True,
    ruler_qa=True,
    essay_from_start=True,
)
PRESETS = {"ruler": RULER_PLACEMENT}
PRESET_SAMPLES = 500
ESSAY_TASKS = tuple(t for t in RULER_TASKS if TASKS[t].args.get("type_haystack") == "essay")
QA_FORMATS = {"qa_1": "squad", "qa_2": "hotpotqa"}
QA_HOW_TO_GET = {
    "qa_1": "the SQuAD v2 dev JSON (https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json) or "
    "hf:rajpurkar/squad_v2@validation",
    "qa_2": "the HotpotQA dev distractor JSON (hotpot_dev_distractor_v1.json) or "
    "hf:hotpotqa/hotpot_qa:distractor@validation",
}


def placement(preset: str | None) -> Placement:
    """The placement of a preset (the default suite's when there is none)."""
    if preset is None:
        return Placement()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]


def check_ruler_data(
    tasks: Sequence[str], *, essays: str | None, qa_data: Mapping[str, str], haystack: str | None
) -> None:
    """Refuse a RULER preset that would not be RULER's benchmark: a substitute haystack or missing data."""
    if haystack is not None:
        raise ValueError(
            "--preset ruler uses RULER's haystacks; leave out --haystack (use --essays for the essays)"
        )
    if any(t in ESSAY_TASKS for t in tasks):
        if not essays:
            raise ValueError(HOW_TO_GET)
        if not essays.startswith("hf:") and not Path(essays).exists():
            raise ValueError(f"{essays}: no such essay source. {HOW_TO_GET}")
    for task, fmt in QA_FORMATS.items():
        if task not in tasks:
            continue
        path = qa_data.get(task)
        if path is None:
            raise ValueError(
                f"--preset ruler needs {task} data: pass --qa-data {task}=FILE, {QA_HOW_TO_GET[task]}"
            )
        if not (path.startswith("hf:") or path.endswith(".json")):
            raise ValueError(
                f"{path}: --preset ruler reads {task} from {QA_HOW_TO_GET[task]} (its original {fmt} format)"
            )


def check_qa_format(task: str, kind: str, source: str) -> None:
    """The loaded file is the dataset RULER reads for `task` (SQuAD for qa_1, HotpotQA for qa_2)."""
    want = QA_FORMATS.get(task)
    if want is not None and kind != want:
        raise ValueError(f"{source}: holds {kind} data, but RULER's {task} reads {QA_HOW_TO_GET[task]}")
