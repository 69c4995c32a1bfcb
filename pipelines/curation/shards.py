"""Shard targets of a recipe: documents routed by their length in tokens into packed shard folders, and the
ShardStream mixture that interleaves those folders for a trainer.

The long-context phase routes documents long enough for 1M-token rows to a folder packed at 1,048,576 and the
rest to one packed at 4,096; the mixture JSON written next to the output says how a trainer alternates them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

MIXTURE_FORMAT = "longtrove.mixture"


class TokenLengthRange(PipelineStep):
    """Keep documents whose token count (with the target's tokenizer) lies in [min_tokens, max_tokens].

    Counting runs one batched tokenizer call per batch of documents; the count is kept in ``metadata['tokens']``.
    """

    name = "📏 token length"
    type = "🔻 - FILTER"

    def __init__(self, shards_config: dict[str, Any], min_tokens: int = 0, max_tokens: int | None = None,
                 batch_size: int = 256):
        super().__init__()
        self.shards_config = shards_config
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._tokenizer: Any = None

    def _counts(self, batch: list[Document]) -> list[int]:
        if self._tokenizer is None:
            from pipelines.steps import ShardsConfig, load_for

            self._tokenizer = load_for(ShardsConfig(**self.shards_config))
        return self._tokenizer.count_batch([d.text for d in batch]).tolist()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        batch: list[Document] = []
        for document in data or ():
            batch.append(document)
            if len(batch) >= self.batch_size:
                yield from self._route(batch)
                batch = []
        if batch:
            yield from self._route(batch)

    def _route(self, batch: list[Document]) -> DocumentsPipeline:
        with self.track_time(unit="batch"):
            counts = self._counts(batch)
        for document, count in zip(batch, counts, strict=True):
            if count < self.min_tokens or (self.max_tokens is not None and count > self.max_tokens):
                self.stat_update("dropped", "dropped_length")
                continue
            document.metadata["tokens"] = count
            self.stat_update("forwarded")
            yield document


class WriteMixture(PipelineStep):
    """Write the mixture JSON (shard folders and weights) once every target's index is in place."""

    name = "🎛 mixture"
    type = "🔢 - TOKENIZER"

    def __init__(self, path: str, sources: list[tuple[str, float]], period: int | None):
        super().__init__()
        self.path = path
        self.sources = sources
        self.period = period

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        if rank == 0:
            from pipelines.curation.quality import write_atomically

            body = {"format": MIXTURE_FORMAT, "sources": [[f, w] for f, w in self.sources], "period": self.period}
            write_atomically(self.path, json.dumps(body, indent=1).encode())


def default_period(weights: list[float]) -> int:
    """The smallest schedule period in which every weight gets a whole number of slots (integer weights)."""
    from fractions import Fraction
    from math import lcm

    fractions = [Fraction(w).limit_denominator(1000) for w in weights]
    scale = lcm(*[f.denominator for f in fractions])
    return int(sum(f * scale for f in fractions))


def open_mixture(path: str | os.PathLike[str], rank: int = 0, world_size: int = 1, **options: Any) -> Any:
    """The trainer's stream over a recipe's shard folders, as its mixture JSON says (a ShardStream)."""
    from packing import ShardStream

    body = json.loads(Path(path).read_text(encoding="utf-8"))
    if body.get("format") != MIXTURE_FORMAT:
        raise ValueError(f"{path}: not a mixture file (format {body.get('format')!r})")
    sources = [(folder, float(weight)) for folder, weight in body["sources"]]
    if body.get("period"):
        options.setdefault("mixture_period", int(body["period"]))
    return ShardStream(sources, rank=rank, world_size=world_size, **options)
