"""QA data for qa_1 and qa_2: questions with their gold documents, and the pool of all documents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class QAData:
    """Questions with their gold documents, and the pool of all documents (distractors are the others)."""

    path: str
    questions: list[dict[str, Any]]
    documents: list[str]


def load_qa(path: str | Path) -> QAData:
    """JSONL of {context, question, answers}; `context` is a string or a list of strings (several gold docs)."""
    path = Path(path)
    records: list[tuple[list[str], str, list[str]]] = []
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the QA data ({exc})") from exc
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
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
    questions = [{"question": q, "answers": a, "gold": [index[c] for c in ctx]} for ctx, q, a in records]
    return QAData(path=path.name, questions=questions, documents=documents)
