"""QA data for qa_1 and qa_2: questions with their gold documents, and the pool of all documents.

Three sources: RULER's own files in their original formats (the SQuAD v2 dev JSON for qa_1, the HotpotQA dev
distractor JSON for qa_2), the same datasets as `hf:` ids, or a JSONL of {context, question, answers}. The
original formats are read as RULER reads them: the documents are the sorted set of all paragraphs, the
questions keep the file's order (SQuAD's unanswerable ones left out), a SQuAD question's other paragraphs of
the same article are its first distractors, and a HotpotQA question's ten paragraphs are all its documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.haystack import jsonl_values, parse_hf_spec


@dataclass
class QAData:
    """Questions with their gold documents, and the pool of all documents (distractors are the others)."""

    path: str
    questions: list[dict[str, Any]]
    documents: list[str]
    kind: str = "jsonl"


def _indexed(path: str, kind: str, records: list[tuple[list[str], str, list[str], list[str]]]) -> QAData:
    """QAData from (gold documents, question, answers, same-article documents) in the source's order."""
    if not records:
        raise ValueError(f"{path}: no answerable questions")
    documents = sorted({c for gold, _, _, more in records for c in gold + more})
    index = {d: i for i, d in enumerate(documents)}
    questions = []
    for gold, question, answers, more in records:
        g = [index[c] for c in gold]
        questions.append(
            {
                "question": question,
                "answers": answers,
                "gold": g,
                "more": [index[c] for c in more if index[c] not in g],
            }
        )
    return QAData(path=path, questions=questions, documents=documents, kind=kind)


def _squad_records(articles: list[Any], where: str) -> list[tuple[list[str], str, list[str], list[str]]]:
    records = []
    for a, article in enumerate(articles):
        try:
            paragraphs = article["paragraphs"]
            contexts = [p["context"] for p in paragraphs]
            for p in paragraphs:
                for qa in p["qas"]:
                    if qa.get("is_impossible") or not qa["answers"]:
                        continue
                    answers = [x["text"] for x in qa["answers"]]
                    records.append(([p["context"]], qa["question"], answers, list(contexts)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: article {a}: not SQuAD v2 (missing or wrong field {exc})") from exc
    return records


def _hotpot_records(items: list[Any], where: str) -> list[tuple[list[str], str, list[str], list[str]]]:
    records = []
    for i, item in enumerate(items):
        try:
            docs = [f"{title}\n{''.join(sentences)}" for title, sentences in item["context"]]
            records.append((docs, item["question"], [item["answer"]], []))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: item {i}: not HotpotQA (missing or wrong field {exc})") from exc
    return records


def _load_original_json(path: Path) -> QAData:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the QA data ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return _indexed(path.name, "squad", _squad_records(data["data"], str(path)))
    if isinstance(data, list):
        return _indexed(path.name, "hotpotqa", _hotpot_records(data, str(path)))
    raise ValueError(
        f"{path}: expected the SQuAD v2 dev JSON (an object with 'data') or the HotpotQA dev distractor JSON "
        "(a list of questions)"
    )


def _load_hf(spec: str) -> QAData:
    """`hf:rajpurkar/squad_v2@validation` or `hf:hotpotqa/hotpot_qa:distractor@validation`."""
    import datasets

    name, config, split = parse_hf_spec(spec, default_split="validation")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many kinds; the user needs the name and the cause
        raise ValueError(f"{spec}: cannot load the dataset ({type(exc).__name__}: {exc})") from exc
    if "paragraphs" in ds.column_names or "answers" in ds.column_names:
        by_title: dict[str, list[str]] = {}
        for row in ds.select_columns(["title", "context"]):
            ctxs = by_title.setdefault(row["title"], [])
            if row["context"] not in ctxs:
                ctxs.append(row["context"])
        records = [
            ([row["context"]], row["question"], list(row["answers"]["text"]), by_title[row["title"]])
            for row in ds
            if row["answers"]["text"]
        ]
        return _indexed(spec, "squad", records)
    items = [
        {
            "question": r["question"],
            "answer": r["answer"],
            "context": list(zip(r["context"]["title"], r["context"]["sentences"], strict=True)),
        }
        for r in ds
    ]
    return _indexed(spec, "hotpotqa", _hotpot_records(items, spec))


def load_qa(path: str | Path) -> QAData:
    """SQuAD v2 / HotpotQA JSON, an `hf:` id, or JSONL of {context, question, answers} (`context` a string or a
    list of strings, several gold documents)."""
    if str(path).startswith("hf:"):
        return _load_hf(str(path))
    path = Path(path)
    if path.suffix == ".json":
        return _load_original_json(path)
    records: list[tuple[list[str], str, list[str]]] = []
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the QA data ({exc})") from exc
    with f:
        for lineno, rec in jsonl_values(f, path, ValueError):
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected an object with context, question, answers")
            ctx, question, answers = rec.get("context"), rec.get("question"), rec.get("answers")
            if isinstance(ctx, str):
                ctx = [ctx]
            if not (isinstance(ctx, list) and ctx and all(isinstance(c, str) and c.strip() for c in ctx)):
                raise ValueError(
                    f"{path}:{lineno}: field 'context' must be a non-empty string or list of strings"
                )
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"{path}:{lineno}: field 'question' must be a non-empty string")
            if isinstance(answers, str):
                answers = [answers]
            if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
                raise ValueError(f"{path}:{lineno}: field 'answers' must be a non-empty list of strings")
            records.append(([c.strip() for c in ctx], question.strip(), answers))
    if not records:
        raise ValueError(f"{path}: no QA records")
    documents = sorted({c for ctx, _, _ in records for c in ctx})
    index = {d: i for i, d in enumerate(documents)}
    questions = [
        {"question": q, "answers": a, "gold": [index[c] for c in ctx], "more": []} for ctx, q, a in records
    ]
    return QAData(path=path.name, questions=questions, documents=documents)
