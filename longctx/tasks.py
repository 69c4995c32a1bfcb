"""RULER's 13 tasks: their names, templates, answer budgets and metrics, and the length names of a suite.

Task names, templates, answer prefixes, needle wording and answer budgets (`max_new_tokens`) follow RULER
(NVIDIA/RULER, scripts/synthetic.yaml and scripts/data/synthetic/constants.py). The generators that draft a
sample of each family live in `needle_tasks`, `aggregation_tasks` and `qa_task`; `sample.build_sample` fits a
draft to an exact token length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_ANSWER = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER = " Answer: According to the coded text above, the three most frequently appeared words are:"
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
)
QA_ANSWER = " Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"

# RULER's answer budgets (tokens_to_generate) per task family; also the `reserve` of every sample.
MAX_NEW_TOKENS = {
    "niah": 128,
    "variable_tracking": 30,
    "common_words_extraction": 120,
    "freq_words_extraction": 50,
    "qa": 32,
}
METRICS = {
    "niah": "string_match_all",
    "variable_tracking": "string_match_all",
    "common_words_extraction": "string_match_all",
    "freq_words_extraction": "string_match_all",
    "qa": "string_match_part",
}


@dataclass(frozen=True)
class TaskSpec:
    """One RULER task: its family (`kind`), arguments, and answer budget."""

    name: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        return MAX_NEW_TOKENS[self.kind]

    @property
    def metric(self) -> str:
        return METRICS[self.kind]

    @property
    def uses_depth(self) -> bool:
        return self.kind in ("niah", "variable_tracking", "qa")


def _niah(hay: str, k: str, v: str, nk: int = 1, nv: int = 1, nq: int = 1) -> dict[str, Any]:
    return {
        "type_haystack": hay,
        "type_needle_k": k,
        "type_needle_v": v,
        "num_needle_k": nk,
        "num_needle_v": nv,
        "num_needle_q": nq,
    }


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("niah_single_1", "niah", _niah("noise", "words", "numbers")),
        TaskSpec("niah_single_2", "niah", _niah("essay", "words", "numbers")),
        TaskSpec("niah_single_3", "niah", _niah("essay", "words", "uuids")),
        TaskSpec("niah_multikey_1", "niah", _niah("essay", "words", "numbers", nk=4)),
        TaskSpec("niah_multikey_2", "niah", _niah("needle", "words", "numbers")),
        TaskSpec("niah_multikey_3", "niah", _niah("needle", "uuids", "uuids")),
        TaskSpec("niah_multivalue", "niah", _niah("essay", "words", "numbers", nv=4)),
        TaskSpec("niah_multiquery", "niah", _niah("essay", "words", "numbers", nq=4)),
        TaskSpec("vt", "variable_tracking", {"type_haystack": "noise", "num_chains": 1, "num_hops": 4}),
        TaskSpec("cwe", "common_words_extraction", {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10}),
        TaskSpec("fwe", "freq_words_extraction", {"alpha": 2.0, "coded_wordlen": 6}),
        TaskSpec("qa_1", "qa", {"dataset": "squad"}),
        TaskSpec("qa_2", "qa", {"dataset": "hotpotqa"}),
    ]
}
QA_TASKS = ("qa_1", "qa_2")
# RULER's 13 tasks in the order of its config_tasks.sh; its average is over all of them.
RULER_TASKS = tuple(TASKS)
DISTRACTOR_POOL_TOKENS = (
    1_300_000  # the distractor pool of niah_multikey_2/3 covers 1M tokens without repeats
)
# RULER's needle depths: 40 points from 0 to 100 percent.
RULER_DEPTHS = np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)


def grid_depth(depth: float) -> float:
    """The nearest point of RULER's 40-point depth grid: the `depth` a sample reports for its heatmap row."""
    return float(RULER_DEPTHS[int(np.argmin(np.abs(RULER_DEPTHS - depth)))])


def parse_length(text: str | int) -> int:
    """`4k` -> 4096, `1m` -> 1048576 (powers of two), or a plain integer."""
    if isinstance(text, int):
        return text
    t = text.strip().lower()
    scale = {"k": 1 << 10, "m": 1 << 20}.get(t[-1:], 1)
    digits = t[:-1] if scale > 1 else t
    try:
        value = int(float(digits) * scale)
    except ValueError as exc:
        raise ValueError(f"length {text!r}: expected an integer or a size like 4k, 128k, 1m") from exc
    if value <= 0:
        raise ValueError(f"length {text!r} must be positive")
    return value


def format_length(n: int) -> str:
    """The inverse of `parse_length` for powers of two (file names like 128k.jsonl)."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}m"
    if n % (1 << 10) == 0:
        return f"{n >> 10}k"
    return str(n)
