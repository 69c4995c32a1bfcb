"""Haystack sources: the filler text that long-context prompts are made of, as small units.

A haystack is a list of units (sentences, or RULER's noise sentence) joined by a separator. Units are the
granularity of needle placement: a needle lands on a unit boundary, so depth is exact to within one unit.
Long sentences are cut at word boundaries so that no unit is larger than `MAX_UNIT_CHARS`.

Sources:

- ``noise``: RULER's repeated noise sentence, one per line.
- ``essay``: the default essay-like haystack. RULER uses Paul Graham's essays, which are not available offline;
  we use the prose of Python's own documentation topics (``pydoc_data.topics``, shipped with every Python),
  with whitespace collapsed and split into sentences, the way RULER treats its essays.
- a folder: every regular file below it (sorted by path), read as UTF-8 text, one document per file; a folder
  holding parquet or jsonl files (such as the curated output of ``longtrove curate``) gives their documents.
- ``*.parquet`` / ``*.jsonl``: one document per row/line, from a text field (``text`` by default), such as the
  curated output of ``longtrove curate``.
- ``hf:NAME[:CONFIG][@SPLIT]``: a Hugging Face dataset through ``datasets`` (local cache when offline).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NOISE_SENTENCE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
MAX_UNIT_CHARS = 400

_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class HaystackError(ValueError):
    """A haystack source that cannot be read; the message names the file, line or field at fault."""


@dataclass
class Haystack:
    """Units of filler text and how they are joined; `provenance` goes into every sample built from it."""

    name: str
    units: list[str]
    sep: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        return sum(len(u) for u in self.units) + len(self.sep) * max(0, len(self.units) - 1)


def split_units(text: str, max_chars: int = MAX_UNIT_CHARS) -> list[str]:
    """Collapse whitespace and split into sentences; sentences longer than `max_chars` are cut at spaces."""
    text = _WHITESPACE.sub(" ", text).strip()
    if not text:
        return []
    units: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if len(sentence) <= max_chars:
            units.append(sentence)
            continue
        start = 0
        while start < len(sentence):
            end = start + max_chars
            if end < len(sentence):
                cut = sentence.rfind(" ", start + 1, end)
                end = cut if cut > start else end
            units.append(sentence[start:end].strip())
            start = end
    return [u for u in units if u]


def _documents_units(docs: Iterable[str]) -> list[str]:
    units: list[str] = []
    for doc in docs:
        units.extend(split_units(doc))
    return units


def digest_units(units: list[str]) -> str:
    h = hashlib.sha256()
    for u in units:
        h.update(u.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def noise_haystack() -> Haystack:
    """RULER's noise haystack: the same sentence, one per line; any length, never repeated text of note."""
    return Haystack(
        name="noise",
        units=[NOISE_SENTENCE],
        sep="\n",
        provenance={"source": "noise", "kind": "noise", "text": NOISE_SENTENCE},
    )


def essay_haystack() -> Haystack:
    """Python's documentation topics as sentences: real English prose that ships with every Python."""
    import sys
    from pydoc_data.topics import topics

    units = _documents_units(topics[name] for name in sorted(topics))
    return Haystack(
        name="essay",
        units=units,
        sep=" ",
        provenance={
            "source": "essay",
            "kind": "pydoc_data.topics",
            "python": ".".join(map(str, sys.version_info[:3])),
            "documents": len(topics),
            "units": len(units),
            "sha256": digest_units(units),
        },
    )


def _iter_folder(folder: Path) -> Iterator[tuple[str, str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise HaystackError(f"{folder}: the haystack folder holds no files")
    for path in files:
        try:
            yield str(path.relative_to(folder)), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise HaystackError(
                f"{path}: not UTF-8 text ({exc}); remove it from the haystack folder"
            ) from exc


def _document_files(folder: Path) -> list[Path]:
    """The parquet and jsonl files below a folder, sorted, hidden ones (staging, temp files) left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix in (".parquet", ".jsonl")
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _iter_document_file(path: Path, text_field: str) -> Iterator[str]:
    return _iter_parquet(path, text_field) if path.suffix == ".parquet" else _iter_jsonl(path, text_field)


def jsonl_values(
    lines: Iterable[str], path: Path, error: type[Exception] = HaystackError
) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSONL file; a line that is not JSON raises
    `error` naming the file and line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        yield lineno, value


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for lineno, record in jsonl_values(f, path):
            value = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise HaystackError(
                    f"{path}:{lineno}: no string field {text_field!r}; choose one with --text-field"
                )
            yield value


def _iter_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise HaystackError(
            f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); "
            "choose one with --text-field"
        )
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if value:
                yield value


def parse_hf_spec(spec: str, default_split: str = "train") -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG][@SPLIT]` -> (name, config or None, split)."""
    rest = spec[3:]
    split = default_split
    if "@" in rest:
        rest, split = rest.rsplit("@", 1)
    name, _, config = rest.partition(":")
    return name, config or None, split


def _iter_hf(spec: str, text_field: str) -> Iterator[str]:
    import datasets

    name, config, split = parse_hf_spec(spec)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many kinds; the user needs the name and the cause
        raise HaystackError(f"{spec}: cannot load the dataset ({type(exc).__name__}: {exc})") from exc
    if text_field not in ds.column_names:
        raise HaystackError(
            f"{spec}: no column {text_field!r} (columns: {', '.join(ds.column_names)}); choose one with --text-field"
        )
    for batch in ds.select_columns([text_field]).iter(batch_size=1024):
        for value in batch[text_field]:
            if value:
                yield value


def load_haystack(spec: str, *, text_field: str = "text", max_chars: int | None = None) -> Haystack:
    """Load a haystack from `spec`: noise, essay, a folder, a .parquet/.jsonl file, or hf:NAME[:CONFIG][@SPLIT].

    `max_chars` stops reading document sources after that much text (enough for the longest prompt).
    """
    if spec == "noise":
        return noise_haystack()
    if spec == "essay":
        return essay_haystack()
    if spec.startswith("hf:"):
        docs: Iterable[str] = _iter_hf(spec, text_field)
        kind = "hf"
    else:
        path = Path(spec)
        if not path.exists():
            raise HaystackError(
                f"{spec}: no such haystack (use noise, essay, a folder, .parquet, .jsonl or hf:NAME)"
            )
        if path.is_dir() and (tables := _document_files(path)):
            # A folder of parquet/jsonl files (the curated output of `longtrove curate`): their documents.
            docs = (doc for table in tables for doc in _iter_document_file(table, text_field))
            kind = "folder of documents"
        elif path.is_dir():
            docs = (text for _, text in _iter_folder(path))
            kind = "folder"
        elif path.suffix == ".parquet":
            docs = _iter_parquet(path, text_field)
            kind = "parquet"
        elif path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz"):
            docs = _iter_jsonl(path, text_field)
            kind = "jsonl"
        else:
            raise HaystackError(f"{spec}: unknown haystack file type (expected .parquet or .jsonl)")
    units: list[str] = []
    documents = 0
    chars = 0
    for doc in docs:
        doc_units = split_units(doc)
        if not doc_units:
            continue
        documents += 1
        units.extend(doc_units)
        chars += len(doc)
        if max_chars is not None and chars >= max_chars:
            break
    if not units:
        raise HaystackError(f"{spec}: the haystack holds no text")
    return Haystack(
        name=Path(spec).name if not spec.startswith("hf:") else spec,
        units=units,
        sep=" ",
        provenance={
            "source": spec if spec.startswith("hf:") else Path(spec).name,
            "kind": kind,
            "documents": documents,
            "units": len(units),
            "sha256": digest_units(units),
        },
    )


@dataclass
class TokenizedUnits:
    """Units with their token ids, tokenized once in the form they take when joined.

    `form` says where the separator goes when the counts are additive: ``before`` (``sep + unit``, right for
    a space before a word in byte-level BPE) or ``after`` (``unit + sep``, right for a newline after
    punctuation). `ids[offsets[i]:offsets[i + 1]]` are the ids of unit `i` in that form; where `clean` is
    given and False, they came from a joined encode and are not the unit's own (see `own_ids`).
    """

    texts: list[str]
    sep: str
    form: str
    ids: np.ndarray
    offsets: np.ndarray
    clean: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.texts)

    def piece(self, i: int) -> str:
        return self.sep + self.texts[i] if self.form == "before" else self.texts[i] + self.sep

    def unit_ids(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def own_ids(self, tok: Any, i: int) -> np.ndarray:
        """The ids of unit `i` alone (in its form), re-encoded when the joined encode mixed it with a neighbour."""
        if self.clean is None or self.clean[i]:
            return self.unit_ids(i)
        return np.asarray(tok.encode(self.piece(i)), dtype=np.uint32)


def choose_form(tok: Any, units: list[str], sep: str, probe: int = 64) -> str:
    """The separator placement whose per-unit counts add up to the count of the joined text."""
    if not sep:
        return "before"
    sample = units[:probe] if len(units) >= 2 else units * 2
    joined = int(tok.count_batch([sep.join(sample)])[0])
    before = int(tok.count_batch([sample[0]])[0]) + int(tok.count_batch([sep + u for u in sample[1:]]).sum())
    after = int(tok.count_batch([u + sep for u in sample[:-1]]).sum()) + int(tok.count_batch([sample[-1]])[0])
    return "before" if abs(before - joined) <= abs(after - joined) else "after"


_UNKNOWN, _PARTIAL = -1, -2
_TOKEN_CHARS: dict[str, np.ndarray] = {}


def _token_chars(tok: Any) -> np.ndarray:
    """Characters per token id, filled in as ids are met (cached per tokenizer for the process)."""
    table = _TOKEN_CHARS.get(tok.fingerprint)
    if table is None:
        table = _TOKEN_CHARS[tok.fingerprint] = np.full(int(tok.vocab_size) + 1, _UNKNOWN, dtype=np.int64)
    return table


def _encode_joined(tok: Any, pieces: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Ids, per-piece offsets and clean-boundary flags from ONE encode of the joined pieces, or None.

    Encoding many short units one call at a time costs far more in per-call overhead than in tokenizing. When
    every token of the text decodes to whole characters of it (byte-level BPE on text whose characters are
    not split across tokens), token ends are known in characters, and each unit's tokens are the ones ending inside it: counts in
    context, seams included. A token across a unit boundary makes both units "unclean" (their ids are not
    their own); the caller re-encodes those alone when it needs their ids.
    """
    joined = "".join(pieces)
    if not pieces or "\ufffd" in joined:
        return None
    ids = np.asarray(tok.encode(joined), dtype=np.uint32)
    if len(ids) == 0:
        return None
    table = _token_chars(tok)
    missing = np.unique(ids[table[ids] == _UNKNOWN])
    for u in missing.tolist():
        text = tok.decode([u])
        # A token holding part of a character has no length in characters.
        table[u] = len(text) if "\ufffd" not in text else _PARTIAL
    lengths = table[ids]
    if (lengths == _PARTIAL).any():
        return None
    ends = np.cumsum(lengths)
    if int(ends[-1]) != len(joined):
        return None
    bounds = np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    offsets[1:] = np.searchsorted(ends, bounds, side="right")
    at_token_end = np.isin(bounds, ends)
    clean = at_token_end & np.concatenate([[True], at_token_end[:-1]])
    # Spot-check that tokens decode to the text itself (a normalizer that keeps lengths would not).
    for i in np.linspace(0, len(pieces) - 1, num=min(len(pieces), 32)).astype(int).tolist():
        if clean[i] and tok.decode(ids[offsets[i] : offsets[i + 1]]) != pieces[i]:
            return None
    return ids, offsets, clean


def tokenize_units(tok: Any, texts: list[str], sep: str, form: str | None = None) -> TokenizedUnits:
    """Encode every unit once, in the additive form: one encode of the joined text when that can be split
    back into units (see `_encode_joined`), else one batch call with a text per unit."""
    form = form or choose_form(tok, texts, sep)
    pieces = [sep + t for t in texts] if form == "before" else [t + sep for t in texts]
    joined = _encode_joined(tok, pieces)
    if joined is not None:
        ids, offsets, clean = joined
        return TokenizedUnits(texts=texts, sep=sep, form=form, ids=ids, offsets=offsets, clean=clean)
    encoded = tok.encode_batch(pieces)
    lengths = np.fromiter((len(a) for a in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(encoded).astype(np.uint32, copy=False) if encoded else np.zeros(0, np.uint32)
    return TokenizedUnits(texts=texts, sep=sep, form=form, ids=ids, offsets=offsets)
