"""The embedded default job: build a sample corpus from text that ships with Python, then run the default recipe.

The corpus is real prose (Python's documentation topics and the docstrings of the standard library, read with
``ast`` so nothing is imported) plus planted exact duplicates, near duplicates, junk aimed at each filter and a few
broken records, so every step of the recipe visibly removes something. Built with a fixed seed: the same Python
gives the same corpus, byte for byte.

Later stages (tokenize and pack shards, build long-context tests) extend the demo by adding an entry to
``DEMO_STAGES``: a ``"module:function"`` that takes the :class:`DemoContext` after curation and returns a short
summary mapping.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import random
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.recipe import DEFAULT_RECIPE, load_recipe
from pipelines.runner import StepCount, run_recipe

# (name, "module:function"), run in order after curation; each function takes a DemoContext.
DEMO_STAGES: list[tuple[str, str]] = [
    ("shards", "pipelines.shards_demo:demo_stage"),
    ("longctx", "pipelines.longctx_demo:demo_stage"),
]

SEED = 1234
N_FILES = 4
N_PLANTED = 12  # exact copies, and as many near copies
MIN_DOCSTRING_CHARS = 600
MIN_NEAR_COPY_CHARS = 1200


@dataclass
class DemoContext:
    """What the demo has made so far, handed to each later stage."""

    out_dir: Path
    corpus_dir: Path
    curated_dir: Path
    recipe: Any
    counts: list[StepCount]
    planted: dict[str, list[str]]
    results: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def real_texts() -> tuple[tuple[str, str], ...]:
    """(id, text) of real prose shipped with Python: documentation topics, then long stdlib docstrings."""
    from pydoc_data.topics import topics

    texts = [(f"pydoc-topic/{name}", topics[name]) for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                name = getattr(node, "name", "<module>")
                texts.append((f"stdlib-doc/{path.stem}.{name}", doc))
    return tuple(texts)


def _near_copy(text: str, rng: random.Random) -> str:
    """A copy with ~1% of its words replaced and a boilerplate header, as mirrors and scrapes make them."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), k=max(1, len(words) // 100)):
        words[i] = rng.choice(["the", "a", "this", "that", "its", "our"])
    return "Mirrored from the documentation archive.\n" + " ".join(words)


def _junk(rng: random.Random, prose: list[str]) -> list[tuple[str, str, str]]:
    """(id, text, the filter meant to catch it)."""
    junk = []
    for i in range(6):
        para = rng.choice(prose).split("\n\n")[0][:400]
        junk.append((f"junk/repeated-{i}", "\n\n".join([para] * 12), "gopher_repetition"))
    for i in range(6):
        tokens = [f"{rng.randrange(10**6)}#{rng.randrange(10**3)}" for _ in range(120)]
        junk.append((f"junk/symbols-{i}", " ".join(f"# {t}" for t in tokens), "gopher_quality"))
    for i in range(4):
        junk.append((f"junk/short-{i}", "Click here to subscribe to the newsletter.", "gopher_quality"))
    for i in range(6):
        base = rng.choice(prose)
        text = (
            base[:1500]
            + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit, and so on for the layout.\n"
        )
        junk.append((f"junk/lorem-{i}", text, "c4"))
    menu = [
        "Home and garden for the whole family",
        "Shop all the deals of the day",
        "Gifts for him and for her",
        "Sign in to your account now",
        "Track your order and the returns",
        "Help with the delivery of an item",
        "Careers at the company and its partners",
        "Privacy and the cookie settings",
    ]
    for i in range(6):
        lines = [rng.choice(menu) for _ in range(40)]
        lines.insert(20, "We are glad that you are here and hope that you find what you need.")
        junk.append((f"junk/menu-{i}", "\n".join(lines), "fineweb_quality"))
    return junk


def recipe_keeps(recipe: Any) -> Callable[[str], bool]:
    """Whether a text would pass the recipe's filters: duplicates are planted only of texts that reach dedup."""
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result

    from pipelines.stages import build_filters

    filters = build_filters(recipe)

    def keeps(text: str) -> bool:
        doc = Document(text=text, id="probe")
        return all(get_filter_result(f.filter(doc))[0] for f in filters)

    return keeps


def build_corpus(
    out_dir: Path, seed: int = SEED, keeps: Callable[[str], bool] | None = None
) -> dict[str, list[str]]:
    """Write the sample corpus as JSONL files under `out_dir`; return the ids planted in each category."""
    rng = random.Random(seed)
    texts = real_texts()
    prose = [t for _, t in texts]
    records: list[bytes] = []
    planted: dict[str, list[str]] = {"exact_dup": [], "near_dup": [], "junk": [], "bad": []}

    def add(doc_id: str, text: str) -> None:
        records.append(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False).encode("utf-8"))

    for doc_id, text in texts:
        add(doc_id, text)
    originals = []
    for doc_id, text in rng.sample(texts, k=len(texts)):  # probe in random order until there are enough
        if len(originals) == 2 * N_PLANTED:
            break
        if len(originals) >= N_PLANTED and len(text) < MIN_NEAR_COPY_CHARS:
            continue
        if keeps is None or keeps(text):
            originals.append((doc_id, text))
    for n, (doc_id, text) in enumerate(originals[:N_PLANTED]):
        add(f"copy/{n}-of-{doc_id}", text)
        planted["exact_dup"].append(f"copy/{n}-of-{doc_id}")
    for n, (doc_id, text) in enumerate(originals[N_PLANTED:]):
        if len(text) < MIN_NEAR_COPY_CHARS:  # too short for MinHash to be sure of it
            continue
        copy = _near_copy(text, rng)
        if keeps is not None and not keeps(copy):
            continue
        add(f"mirror/{n}-of-{doc_id}", copy)
        planted["near_dup"].append(f"mirror/{n}-of-{doc_id}")
    for doc_id, text, _ in _junk(rng, prose):
        add(doc_id, text)
        planted["junk"].append(doc_id)
    bad = [
        b'{"id": "bad/utf8", "text": "caf\xe9 in Latin-1, not UTF-8"}',
        b'{"id": "bad/json", "text": "an unterminated string}',
        b'{"id": "bad/no-text", "body": "the text is under the wrong key"}',
        b'{"id": "bad/empty", "text": "   "}',
    ]
    records += bad
    planted["bad"] = ["bad/utf8", "bad/json", "bad/no-text", "bad/empty"]
    rng.shuffle(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(N_FILES):
        part = records[i::N_FILES]
        target = out_dir / f"part-{i:02d}.jsonl"
        tmp = target.with_suffix(".jsonl.tmp")
        tmp.write_bytes(b"\n".join(part) + b"\n")
        tmp.replace(target)
    return planted


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    workers: int | None = None,
    client: Any = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoContext:
    """Build the corpus, curate it with the default recipe on Dask, then run any later demo stages."""
    out = Path(out_dir).resolve()
    corpus = out / "corpus"
    overrides: dict[str, Any] = {
        "input": {"paths": [str(corpus)]},
        "output": {"path": str(out / "curated"), "work_dir": str(out / "work")},
        "executor": {"skip_completed": False},
    }
    if workers:
        overrides["executor"]["workers"] = workers
    recipe = load_recipe(DEFAULT_RECIPE, overrides=overrides, check_paths=False)
    planted = build_corpus(corpus, keeps=recipe_keeps(recipe))
    echo(f"corpus: {corpus} ({sum(1 for _ in corpus.glob('*.jsonl'))} files)")
    counts = run_recipe(recipe, client=client, progress=progress)
    ctx = DemoContext(out, corpus, Path(recipe.output.path), recipe, counts, planted)
    for name, target in DEMO_STAGES:
        module, _, function = target.partition(":")
        echo(f"demo stage: {name}")
        ctx.results[name] = getattr(importlib.import_module(module), function)(ctx)
    return ctx
