"""Helpers shared by the evaluation tests: suites, the reference server, and expected scores worked out
independently of the server (from where the needles sit in each prompt)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from longctx.reference_server import Faults, ReferenceServer, prompt_key
from longctx.server_dialects import PROBE_TEXT
from tests.conftest import CL100K_OFFLINE

NEEDLE = re.compile(r"One of the special magic (.+?) for (.+?) is: (\S+?)\.")
QUESTION = re.compile(
    r"What (?:are all|is) the special magic (.+?) for (.+?) mentioned in the provided text\?"
)


def sample_requests(server: ReferenceServer) -> dict[str, int]:
    """Generation requests per prompt, without the preflight's one-token streamed request."""
    probes = {
        prompt_key({"prompt": PROBE_TEXT}),
        prompt_key({"messages": [{"role": "user", "content": PROBE_TEXT}]}),
    }
    return {key: n for key, n in server.stats.requests.items() if key not in probes}


@pytest.fixture(scope="session")
def cl100k():
    from tokenization import load_tokenizer

    return load_tokenizer(CL100K_OFFLINE)


def make_suite(
    out: Path,
    tokenizer: str,
    *,
    lengths: list[int],
    depths: list[float],
    tasks: tuple[str, ...] = ("niah_single_2",),
    seed: int = 1,
) -> Path:
    """A suite from the project's builder (`longctx.suite`), one sample per task, length and depth."""
    from longctx.suite import SuiteConfig, build_suite

    cfg = SuiteConfig(
        tokenizer=tokenizer,
        tasks=list(tasks),
        lengths=lengths,
        depths=depths,
        samples=len(depths),
        seed=seed,
        workers=1,
    )
    build_suite(cfg, out, progress=False)
    return out


def read_samples(suite: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for path in sorted(suite.glob("*/*.jsonl")) for line in path.read_text().splitlines()
    ]


def expected_score(
    sample: dict[str, Any], tokenizer: Any, window: int, *, chat_prompt: str | None = None
) -> float:
    # A rendered chat template's special-token strings are special tokens to the server, as to vLLM.
    special = chat_prompt is not None
    """The reference server's score for a sample, from where the asked needles sit in the prompt.

    A needle counts when its first token lies inside the last `window` tokens of the prompt. Asserts that no
    needle sits within a few tokens of the window's edge, where a merge at the cut could go either way.
    """
    prompt = chat_prompt if chat_prompt is not None else sample["prompt"]
    total = len(tokenizer.encode(prompt, allow_special=special))
    edge = total - window
    query = QUESTION.findall(prompt)[-1][1]
    asked = set(re.split(r", and |, ", query))
    found = set()
    for m in NEEDLE.finditer(prompt):
        if m.group(2) not in asked:
            continue
        start = len(tokenizer.encode(prompt[: m.start()], allow_special=special))
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
