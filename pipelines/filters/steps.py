"""The quality filters as datatrove steps that share each document's words and decide a batch at a time.

One step per filter, named like datatrove's, so the stats (``total``, ``forwarded``, ``dropped``,
``dropped_<reason>``, C4's ``line-*`` counts) read the same. Each step holds the datatrove filter it replaces
(for its parameters and as the slow path) and asks a per-process ``WordSplitter`` for words; a document's words are
kept, keyed by the document, until its text changes (C4 rewrites it) or it leaves the cache.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections import Counter, OrderedDict

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.batching import batched
from datatrove.utils.stats import MetricStats
from datatrove.utils.typeshelper import StatHints

from pipelines.filters.checks import (
    c4_reason,
    fineweb_reason,
    gopher_quality_reasons,
    gopher_repetition_reasons,
)
from pipelines.filters.offline import LocalModelLanguageFilter
from pipelines.filters.words import WordSplitter

_SPLITTERS: dict[str, WordSplitter] = {}


def word_splitter(language: str) -> WordSplitter:
    """The process's splitter for a language (its chunk cache is shared by every step)."""
    if language not in _SPLITTERS:
        _SPLITTERS[language] = WordSplitter(language)
    return _SPLITTERS[language]


class _SharedWords:
    """Word ids of documents in flight between the steps, valid while the document's text is the same object."""

    def __init__(self, capacity: int = 8192):
        self.capacity = capacity
        self.entries: OrderedDict[int, tuple[Document, str, str, int, np.ndarray]] = OrderedDict()

    def get(self, doc: Document, splitter: WordSplitter) -> np.ndarray:
        ids = self._cached(doc, splitter)
        if ids is None:
            ids = splitter.words(doc.text)
            self.put(doc, splitter, ids)
        return ids

    def _cached(self, doc: Document, splitter: WordSplitter) -> np.ndarray | None:
        entry = self.entries.get(id(doc))
        if (
            entry is not None
            and entry[0] is doc
            and entry[1] is doc.text
            and entry[2] == splitter.language
            and entry[3] == splitter.generation
        ):
            return entry[4]
        return None

    def get_many(self, docs: list[Document], splitter: WordSplitter) -> list[np.ndarray]:
        """The words of each document, those not kept computed together."""
        words = [self._cached(doc, splitter) for doc in docs]
        missing = [doc for doc, ids in zip(docs, words, strict=True) if ids is None]
        if missing:
            generation = splitter.generation
            ids, offsets = self.batch(missing, splitter)
            if splitter.generation != generation:  # the table started over: the ids kept from before are stale
                ids, offsets = self.batch(docs, splitter)
                return np.split(ids, offsets[1:-1])
            fresh = iter(np.split(ids, offsets[1:-1]))
            words = [next(fresh) if w is None else w for w in words]
        return words

    def put(self, doc: Document, splitter: WordSplitter, ids: np.ndarray) -> None:
        self.entries[id(doc)] = (doc, doc.text, splitter.language, splitter.generation, ids)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def batch(self, docs: list[Document], splitter: WordSplitter) -> tuple[np.ndarray, np.ndarray]:
        """The words of a batch of documents at once (``ids[offsets[i]:offsets[i + 1]]``), kept for later steps."""
        ids, offsets = splitter.batch_words([doc.text for doc in docs])
        for doc, start, end in zip(docs, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            self.put(doc, splitter, ids[start:end])
        return ids, offsets


SHARED_WORDS = _SharedWords()


class _FastFilter(BaseFilter):
    """A datatrove filter's decisions, a batch of documents at a time, on shared words."""

    reference_class: type[BaseFilter]

    def __init__(self, batch_size: int = 256, exclusion_writer=None, **params):
        super().__init__(exclusion_writer=exclusion_writer, batch_size=batch_size)
        self.reference = self.reference_class(**params)
        self.language = getattr(self.reference, "language", "en")

    @property
    def splitter(self) -> WordSplitter:
        return word_splitter(self.language)

    def words(self, doc: Document) -> np.ndarray:
        return SHARED_WORDS.get(doc, self.splitter)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    @abstractmethod
    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        """One decision per document: True to keep, False or (False, datatrove's reason) to drop."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # BaseFilter.run without its "batches" count, so the stats carry datatrove's keys only
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            for batch in batched(data, self.batch_size):
                with self.track_time("batch"):
                    results = self.filter_batch(batch)
                for doc, result in zip(batch, results, strict=True):
                    self.stat_update(StatHints.total)
                    keep, reason = result if isinstance(result, tuple) else (result, None)
                    if keep:
                        self.stat_update(StatHints.forwarded)
                        self.update_doc_stats(doc)
                        yield doc
                        continue
                    self.stat_update(StatHints.dropped)
                    if reason:
                        self.stat_update(f"dropped_{reason}")
                    if self.exclusion_writer:
                        if reason:
                            doc.metadata["filter_reason"] = reason
                        writer.write(doc, rank)


def _verdict(reason: str | None) -> bool | tuple[bool, str]:
    return True if reason is None else (False, reason)


class FastGopherRepetitionFilter(_FastFilter):
    """GopherRepetitionFilter; ``join_fix`` compares duplicated n-grams word by word (see docs/curation.md)."""

    name = GopherRepetitionFilter.name
    reference_class = GopherRepetitionFilter

    def __init__(self, join_fix: bool = False, batch_size: int = 256, exclusion_writer=None, **params):
        super().__init__(batch_size=batch_size, exclusion_writer=exclusion_writer, **params)
        self.join_fix = join_fix
        ref = self.reference
        self.use_reference = any(n < 1 for n, _ in (*ref.top_n_grams, *ref.dup_n_grams))

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        if self.use_reference:
            return [self.reference.filter(doc) for doc in batch]
        ids, offsets = SHARED_WORDS.batch(batch, self.splitter)
        texts = [doc.text for doc in batch]
        reasons = gopher_repetition_reasons(texts, ids, offsets, self.splitter, self.reference, self.join_fix)
        return [_verdict(reason) for reason in reasons]


class FastGopherQualityFilter(_FastFilter):
    name = GopherQualityFilter.name
    reference_class = GopherQualityFilter

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        splitter = self.splitter
        words = SHARED_WORDS.get_many(batch, splitter)
        results: list[bool | tuple[bool, str]] = [True] * len(batch)
        # datatrove divides by the word count: a document without words is left to it (to decide or fail)
        with_words = [i for i, ids in enumerate(words) if len(ids)]
        for i in sorted(set(range(len(batch))) - set(with_words)):
            results[i] = self.reference.filter(batch[i])
        if with_words:
            ids = np.concatenate([words[i] for i in with_words])
            offsets = np.concatenate(([0], np.cumsum([len(words[i]) for i in with_words])))
            stop_ids = splitter.token_array(sorted(self.reference.stop_words))
            texts = [batch[i].text for i in with_words]
            reasons = gopher_quality_reasons(texts, ids, offsets, splitter, self.reference, stop_ids)
            for i, reason in zip(with_words, reasons, strict=True):
                results[i] = _verdict(reason)
        return results


class FastC4QualityFilter(_FastFilter):
    name = C4QualityFilter.name
    reference_class = C4QualityFilter

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        if not self.reference.split_paragraph:  # sentences instead of lines: datatrove's own code
            return [self.reference.filter(doc) for doc in batch]
        line_stats: Counter = Counter()
        results = []
        for doc in batch:
            reason, text = c4_reason(doc.text, self.splitter, self.reference, line_stats)
            if reason is None:
                doc.text = text
            results.append(_verdict(reason))
        for key, count in line_stats.items():
            if count:  # as `count` calls of stat_update(key)
                self.stats[key] += MetricStats(total=count, n=count, mean=1.0, min=1, max=1)
        return results


class FastFineWebQualityFilter(_FastFilter):
    name = FineWebQualityFilter.name
    reference_class = FineWebQualityFilter

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        return [_verdict(fineweb_reason(doc.text, self.splitter, self.reference)) for doc in batch]


class BatchLanguageFilter(LocalModelLanguageFilter):
    """LocalModelLanguageFilter predicting a batch of documents in one fastText call."""

    def __init__(self, model_path: str, batch_size: int = 256, **kwargs):
        super().__init__(model_path, **kwargs)
        self.batch_size = batch_size

    def filter_batch(self, batch: list[Document]) -> list[bool]:
        lid = self.model
        labels, scores = lid.model.predict([doc.text.replace("\n", " ") for doc in batch], k=lid.k)
        results = []
        for doc, doc_labels, doc_scores in zip(batch, labels, scores, strict=True):
            # datatrove's FastTextLID.predict and LanguageFilter.filter, on this document's row
            lang_pairs = {
                label.split("__")[2]: float(score)
                for label, score in zip(doc_labels, doc_scores, strict=False)
            }
            lang, lang_score = max(lang_pairs.items(), key=lambda x: x[1])
            if self.languages:
                lang_pairs = {language: lang_pairs.get(language, 0.0) for language in self.languages}
            if self.backend == "glotlid":
                lang, script = lang.split("_")
                doc.metadata["language_script"] = script
            doc.metadata["language"] = lang
            doc.metadata["language_score"] = lang_score
            if self.keep_top_pairs_threshold != -1:
                for key, value in lang_pairs.items():
                    if value > self.keep_top_pairs_threshold:
                        doc.metadata[f"top_language_{key}_score"] = value
            results.append(
                self.label_only
                or (self.languages and any(score > self.language_threshold for score in lang_pairs.values()))
                or (self.languages is None and lang_score > self.language_threshold)
            )
        return results

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.model._model is None:
            from fasttext.FastText import _FastText

            self.model._model = _FastText(self.model_path)
        yield from _FastFilter.run(self, data, rank, world_size)


FAST_FILTERS = {
    "gopher_repetition": FastGopherRepetitionFilter,
    "gopher_quality": FastGopherQualityFilter,
    "c4": FastC4QualityFilter,
    "fineweb_quality": FastFineWebQualityFilter,
}
