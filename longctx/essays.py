"""Paul Graham's essays, the essay haystack of RULER's niah_single_2/3, multikey_1, multivalue and multiquery.

RULER downloads the essays (scripts/data/synthetic/json/download_paulgraham_essay.py) and concatenates the
text files, sorted by name, into `PaulGrahamEssays.json` (`{"text": ...}`); they cannot ship with longtrove.
`load_essays` reads that file, a folder of the essays as .txt files (joined the same way, so both give the
same haystack), a parquet/jsonl file of documents or an `hf:` dataset. Like RULER, the text's whitespace is
collapsed; units are its sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

from longctx.haystack import Haystack, HaystackError, digest_units, load_haystack, split_units

HOW_TO_GET = (
    "RULER's preset needs Paul Graham's essays: run NVIDIA/RULER's "
    "scripts/data/synthetic/json/download_paulgraham_essay.py and pass --essays PaulGrahamEssays.json "
    "(or a folder of the essays as .txt files, a parquet/jsonl file, or hf:NAME)"
)


def _essay_haystack(text: str, source: str, kind: str, documents: int) -> Haystack:
    units = split_units(text)
    if not units:
        raise HaystackError(f"{source}: the essays hold no text")
    return Haystack(
        name="essay",
        units=units,
        sep=" ",
        provenance={
            "source": source,
            "kind": kind,
            "documents": documents,
            "units": len(units),
            "sha256": digest_units(units),
        },
    )


def load_essays(spec: str | None, *, text_field: str = "text") -> Haystack:
    """The essays from `spec` (see the module doc); a missing source is an error that says how to get one."""
    if not spec:
        raise HaystackError(HOW_TO_GET)
    if spec.startswith("hf:"):
        hay = load_haystack(spec, text_field=text_field)
        hay.name = "essay"
        return hay
    path = Path(spec)
    if not path.exists():
        raise HaystackError(f"{spec}: no such essay source. {HOW_TO_GET}")
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise HaystackError(f"{spec}: the folder holds no .txt essays. {HOW_TO_GET}")
        try:
            text = "".join(f.read_text(encoding="utf-8") for f in files)
        except UnicodeDecodeError as exc:
            raise HaystackError(f"{spec}: an essay is not UTF-8 text ({exc})") from exc
        return _essay_haystack(text, path.name, "paul graham essays (folder)", len(files))
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HaystackError(f"{spec}: not a readable JSON file ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise HaystackError(
                f'{spec}: expected RULER\'s PaulGrahamEssays.json, an object {{"text": "..."}}'
            )
        return _essay_haystack(data["text"], path.name, "paul graham essays (json)", 1)
    hay = load_haystack(spec, text_field=text_field)
    hay.name = "essay"
    return hay
