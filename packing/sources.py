"""Shard folders as stream sources: where they are, their weight in a mixture, their index.

Why: a stream reads one folder or a weighted mixture of folders, local or remote (any fsspec URL); what
a folder holds (rows per shard, seq_len, tokenizer fingerprint) comes from its ``index.json`` alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from packing.format import INDEX_FILE, ShardFormatError


@dataclass
class ShardSource:
    """One shard folder of a stream: its location (local folder or fsspec URL), weight and index."""

    location: str
    weight: float
    index: dict[str, Any]
    remote: bool
    cum_rows: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rows = np.fromiter((s["rows"] for s in self.index["shards"]), dtype=np.int64)
        self.cum_rows = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(rows, out=self.cum_rows[1:])

    @property
    def samples(self) -> int:
        return int(self.cum_rows[-1])

    @property
    def seq_len(self) -> int:
        return int(self.index["seq_len"])

    @property
    def fingerprint(self) -> str:
        return str(self.index["tokenizer"].get("fingerprint"))

    @property
    def index_name(self) -> str:
        return f"{self.location.rstrip('/')}/{INDEX_FILE}"

    def describe(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "weight": self.weight,
            "samples": self.samples,
            "seq_len": self.seq_len,
            "fingerprint": self.fingerprint,
        }


def is_url(location: str) -> bool:
    return "://" in location


def source_name(location: str) -> str:
    """The last path component of a folder or URL (what a state and a repr show)."""
    return location.rstrip("/").rsplit("/", 1)[-1]


def parse_source(source: Any) -> list[tuple[str, float]]:
    """A folder, or a list of ``(folder, weight)`` pairs, as checked ``(location, weight)`` pairs."""
    if isinstance(source, str | os.PathLike):
        return [(os.fspath(source), 1.0)]
    if isinstance(source, Sequence) and source:
        pairs = []
        for i, item in enumerate(source):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise ValueError(f"mixture entry {i} must be a (folder, weight) pair, got {item!r}")
            folder, weight = item
            weight = float(weight)
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"mixture entry {i} ({folder}): weight must be positive, got {weight}")
            pairs.append((os.fspath(folder), weight))
        return pairs
    raise ValueError(f"source must be a shard folder or a list of (folder, weight) pairs, got {source!r}")


def check_mixture(sources: list[ShardSource]) -> None:
    """One tokenizer across the mixture, and no empty source in it."""
    first = sources[0]
    for s in sources[1:]:
        if s.fingerprint != first.fingerprint:
            raise ShardFormatError(
                f"{s.index_name}: tokenizer fingerprint {s.fingerprint[:16]}... differs from "
                f"{first.index_name} ({first.fingerprint[:16]}...); a mixture needs one tokenizer"
            )
    for s in sources:
        if s.samples == 0 and len(sources) > 1:
            raise ShardFormatError(f"{s.index_name}: holds no samples; drop it from the mixture")


__all__ = ["ShardSource", "check_mixture", "is_url", "parse_source", "source_name"]
