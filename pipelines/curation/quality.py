"""The quality-bucket steps: score with an ensemble of fastText classifiers, then bucket by corpus percentiles.

Two passes, each a stage of `tasks` ranks (no stage runs as one task):

    quality-score   read curated -> EnsembleScorer (scores in metadata, writes its rank's histograms)
                    -> write scored documents (one file per rank)
    quality-bucket  read the rank's scored file -> BucketAssigner (sums every rank's histograms into the
                    percentile edges, the same on every rank) -> write documents with their bucket

Scoring calls fastText once per batch of documents (its native multi-line predict) rather than once per
document; `score_texts` is proved equal to datatrove's FastTextClassifierFilter scores in the tests and counted
in bench/buckets.py.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipelines.curation.buckets import ensemble_buckets, rank_histograms
from pipelines.curation.config import QualityConfig

SCORE_KEY = "quality_score"
BUCKET_KEY = "quality_bucket"
FOLDER_KEY = "quality_folder"


def load_fasttext(path: str) -> Any:
    """A fastText model from a local file, without fastText's deprecation print."""
    from fasttext.FastText import _FastText

    if not os.path.isfile(path):
        raise FileNotFoundError(f"fastText model {path!r} not found (quality.classifiers.path)")
    return _FastText(model_path=path)


def score_texts(model: Any, texts: list[str], label: str, newline_replacement: str = " ") -> np.ndarray:
    """Probability of `label` for each text, one native call for the whole batch."""
    lines = [t.strip().replace("\n", newline_replacement) for t in texts]
    labels, probs = model.predict(lines, k=-1)
    wanted = f"__label__{label}"
    out = np.zeros(len(lines), dtype=np.float64)
    for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == wanted:
                out[i] = value
                break
    return out


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: a killed task leaves nothing that looks done."""
    from fsspec.core import url_to_fs

    fs, fs_path = url_to_fs(path)
    parent = fs_path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    temp = f"{parent}/.{uuid.uuid4().hex}.tmp"
    with fs.open(temp, "wb") as f:
        f.write(data)
    fs.mv(temp, fs_path)


class EnsembleScorer(PipelineStep):
    """Score every document with each classifier (metadata ``quality/<key>`` and ``quality_score``) and write
    this rank's score histograms to ``<histogram_folder>/<rank>.npy`` once the rank's documents are done."""

    name = "🎯 quality scores"
    type = "🏷 - ANNOTATOR"

    def __init__(self, config: QualityConfig, histogram_folder: str):
        super().__init__()
        from datatrove.io import get_datafolder

        self.config = config
        # named output_folder: the executor stages it per attempt and moves it into place when the rank is done
        self.output_folder = get_datafolder(histogram_folder)
        self._models: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._models is None:
            self._models = [load_fasttext(c.path) for c in self.config.classifiers]
            for c, model in zip(self.config.classifiers, self._models, strict=True):
                labels = [x.removeprefix("__label__") for x in model.labels]
                if c.label not in labels:
                    raise ValueError(f"quality.classifiers {c.path}: no label {c.label!r} (labels: {labels})")
        return self._models

    def score_batch(self, batch: list[Document]) -> np.ndarray:
        texts = [d.text for d in batch]
        columns = [
            score_texts(model, texts, c.label, self.config.newline_replacement)
            for c, model in zip(self.config.classifiers, self._load(), strict=True)
        ]
        scores = np.stack(columns, axis=1)
        weights = np.array([c.weight for c in self.config.classifiers])
        mean = scores @ (weights / weights.sum())
        for d, row, m in zip(batch, scores, mean, strict=True):
            for c, value in zip(self.config.classifiers, row, strict=True):
                d.metadata[f"quality/{c.key}"] = float(value)
            d.metadata[SCORE_KEY] = float(m)
        return scores

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        weights = np.array([c.weight for c in self.config.classifiers])
        counts = np.zeros((len(weights) + 1, self.config.histogram_bins), dtype=np.int64)
        batch: list[Document] = []
        for document in data or ():
            batch.append(document)
            if len(batch) >= self.config.batch_size:
                yield from self._flush(batch, weights, counts)
                batch = []
        if batch:
            yield from self._flush(batch, weights, counts)
        with self.output_folder.open(f"{rank:05d}.npy", "wb") as f:
            np.save(f, counts)

    def _flush(self, batch: list[Document], weights: np.ndarray, counts: np.ndarray) -> DocumentsPipeline:
        with self.track_time(unit="batch"):
            scores = self.score_batch(batch)
            counts += rank_histograms(scores, weights, self.config.histogram_bins)
        for document in batch:
            self.stat_update("scored")
            yield document


def merged_histograms(folder: str, ranks: int, bins: int, classifiers: int) -> np.ndarray:
    """The sum of every rank's histograms; a missing rank file is an error naming it."""
    import io

    from fsspec.core import url_to_fs

    fs, base = url_to_fs(folder.rstrip("/"))
    total = np.zeros((classifiers + 1, bins), dtype=np.int64)
    for rank in range(ranks):
        path = f"{base}/{rank:05d}.npy"
        if not fs.exists(path):
            raise FileNotFoundError(f"{folder}: no score histogram of rank {rank} ({rank:05d}.npy); rerun quality-score")
        with fs.open(path, "rb") as f:
            counts = np.load(io.BytesIO(f.read()))
        if counts.shape != total.shape:
            raise ValueError(f"{path}: histogram shape {counts.shape}, expected {total.shape} (config changed?)")
        total += counts
    return total


class BucketAssigner(PipelineStep):
    """Give each scored document its bucket (metadata ``quality_bucket``) from the corpus-wide percentile edges,
    and the folder it belongs in when buckets are split into folders (``quality_folder``)."""

    name = "🪣 quality buckets"
    type = "🏷 - ANNOTATOR"

    def __init__(self, config: QualityConfig, histogram_folder: str, ranks: int, edges_file: str | None = None):
        super().__init__()
        self.config = config
        self.histogram_folder = histogram_folder
        self.ranks = ranks
        self.edges_file = edges_file
        self._counts: np.ndarray | None = None

    def counts(self, rank: int) -> np.ndarray:
        if self._counts is None:
            self._counts = merged_histograms(
                self.histogram_folder, self.ranks, self.config.histogram_bins, len(self.config.classifiers)
            )
            if rank == 0 and self.edges_file:
                self._write_edges()
        return self._counts

    def _write_edges(self) -> None:
        from pipelines.curation.buckets import bucket_edges

        edges = [bucket_edges(c, self.config.buckets).tolist() for c in self._counts]
        report = {
            "buckets": self.config.buckets,
            "combine": self.config.combine,
            "histogram_bins": self.config.histogram_bins,
            "documents": int(self._counts[0].sum()),
            "edge_bins": {"mean": edges[0]} | {c.key: e for c, e in zip(self.config.classifiers, edges[1:], strict=True)},
        }
        write_atomically(self.edges_file, json.dumps(report, indent=1).encode())

    def folder_of(self, bucket: int) -> str:
        if self.config.split_folders == "bucket":
            return f"bucket-{bucket:02d}"
        for lo, hi in self.config.ranges or []:
            if lo <= bucket <= hi:
                return f"buckets-{lo:02d}-{hi:02d}"
        return "all"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        keys = [f"quality/{c.key}" for c in self.config.classifiers]
        weights = np.array([c.weight for c in self.config.classifiers])
        batch: list[Document] = []
        for document in data or ():
            batch.append(document)
            if len(batch) >= self.config.batch_size:
                yield from self._assign(batch, keys, weights, rank)
                batch = []
        if batch:
            yield from self._assign(batch, keys, weights, rank)

    def _assign(self, batch: list[Document], keys: list[str], weights: np.ndarray, rank: int) -> DocumentsPipeline:
        try:
            scores = np.array([[d.metadata[k] for k in keys] for d in batch], dtype=np.float64)
        except KeyError as e:
            raise ValueError(f"rank {rank}: a scored document lacks {e} (classifiers changed since scoring?)") from None
        _, buckets = ensemble_buckets(scores, weights, self.counts(rank), self.config.buckets, self.config.combine)
        for document, bucket in zip(batch, buckets.tolist(), strict=True):
            document.metadata[BUCKET_KEY] = bucket
            if self.config.split_folders != "none":
                document.metadata[FOLDER_KEY] = self.folder_of(bucket)
            self.stat_update(f"bucket_{bucket:02d}")
            yield document
