"""Helpers shared by the evaluation tests: suites, the reference server, and expected scores worked out
independently of the server (from where the needles sit in each prompt)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from longctx.reference_server import Faults, ReferenceServer
from tests.conftest import CL100K_OFFLINE, python_prose

NEEDLE = re.compile(r"One of the special magic (.+?) for (.+?) is: (\S+?)\.")
QUESTION = re.compile(r"What are all the special magic (.+?) for (.+?) mentioned in the provided text\?")


@pytest.fixture(scope="session")
def cl100k():
    from tokenization import load_tokenizer

    return load_tokenizer(CL100K_OFFLINE)


def make_suite(
    out: Path,
    tokenizer: Any,
    *,
    lengths: list[int],
    depths: list[float],
    task: str = "niah_single_1",
    values_per_key: int = 1,
    chat: bool = False,
) -> Path:
    """A RULER-shaped NIAH suite: one sample per length and depth, `<out>/<task>/<length>.jsonl` + suite.json."""
    hay_ids = tokenizer.encode(" ".join(python_prose()))
    while len(hay_ids) < max(lengths):  # repeat the haystack for the longest lengths
        hay_ids = np.concatenate([hay_ids, hay_ids])
    reserve = 64
    for length in lengths:
        lines = []
        for i, depth in enumerate(depths):
            key = f"key-{length}-{i}"
            values = [
                str(1_000_000 + 7919 * (length + 31 * i + v) % 8_999_999) for v in range(values_per_key)
            ]
            context = tokenizer.decode(hay_ids[: length - reserve - 80])
            sentences = re.split(r"(?<=\.) ", context)
            cut = round(len(sentences) * depth / 100)
            needles = [f"One of the special magic numbers for {key} is: {v}." for v in values]
            context = " ".join(sentences[:cut] + needles + sentences[cut:])
            question = f"What are all the special magic numbers for {key} mentioned in the provided text?"
            prefix = f" The special magic numbers for {key} mentioned in the provided text are"
            head = (
                "Some special magic numbers are hidden within the following text. Make sure to memorize it."
            )
            user = f"{head}\n{context}\n{question}"
            prompt = user + prefix
            messages = [{"role": "user", "content": user}]
            sample = {
                "id": f"{task}-{length}-{i:04d}",
                "task": task,
                "length": length,
                "reserve": reserve,
                "depth": depth,
                "prompt": prompt,
                "messages": messages,
                "answer_prefix": prefix,
                "references": values,
                "token_count": int(len(tokenizer.encode(prompt))),
                "max_new_tokens": reserve,
                "seed": i,
                "haystack": {"name": "pydoc"},
            }
            lines.append(json.dumps(sample))
        (out / task).mkdir(parents=True, exist_ok=True)
        (out / task / f"{length}.jsonl").write_text("\n".join(lines) + "\n")
    meta = {
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint},
        "tasks": [task],
        "lengths": lengths,
        "depths": depths,
        "samples": 1,
        "seed": 0,
    }
    (out / "suite.json").write_text(json.dumps(meta))
    return out


def read_samples(suite: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for path in sorted(suite.glob("*/*.jsonl")) for line in path.read_text().splitlines()
    ]


def expected_score(
    sample: dict[str, Any], tokenizer: Any, window: int, *, chat_prompt: str | None = None
) -> float:
    """The reference server's score for a sample, from where the asked needles sit in the prompt.

    A needle counts when its first token lies inside the last `window` tokens of the prompt. Asserts that no
    needle sits within a few tokens of the window's edge, where a merge at the cut could go either way.
    """
    prompt = chat_prompt if chat_prompt is not None else sample["prompt"]
    total = len(tokenizer.encode(prompt))
    edge = total - window
    asked = QUESTION.findall(prompt)[-1][1]
    found = set()
    for m in NEEDLE.finditer(prompt):
        if m.group(2) != asked:
            continue
        start = len(tokenizer.encode(prompt[: m.start()]))
        assert abs(start - edge) > 4 or edge <= 0, f"needle of {sample['id']} sits on the window's edge"
        if start >= edge:
            found.add(m.group(3))
    refs = sample["references"]
    return 100.0 * sum(1 for r in refs if r in found) / len(refs)


@contextmanager
def reference_server(tokenizer: Any, **kwargs: Any) -> Iterator[ReferenceServer]:
    faults = kwargs.pop("faults", None) or Faults()
    with ReferenceServer(tokenizer, faults=faults, **kwargs) as server:
        yield server
