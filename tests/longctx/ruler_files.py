"""Small files in the original formats of RULER's data, written by the tests (nothing is downloaded):
Paul Graham's essays as .txt files and as PaulGrahamEssays.json, the SQuAD v2 dev JSON, the HotpotQA dev
distractor JSON and RULER's english_words.json. The text is Python's documentation (real prose that ships with
Python); the layout and fields are the datasets' own."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import python_prose


def _paragraphs(min_chars: int = 300) -> list[str]:
    out = []
    for text in python_prose():
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            if len(para) >= min_chars and para[0].isalpha() and para[:900] not in out:
                out.append(para[:900])
    return out


def write_essays(folder: Path, files: int = 3, chars: int = 60_000) -> Path:
    """A folder of essays as .txt files, as RULER's download script leaves them before joining them."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(python_prose())
    step = chars // files
    for i in range(files):
        (folder / f"essay_{i:02d}.txt").write_text(text[i * step : (i + 1) * step] + "\n", encoding="utf-8")
    return folder


def write_essays_json(folder: Path, path: Path) -> Path:
    """PaulGrahamEssays.json as RULER's download script writes it: the sorted .txt files concatenated."""
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt")))
    path.write_text(json.dumps({"text": text}), encoding="utf-8")
    return path


def write_squad(path: Path, articles: int = 6, paragraphs: int = 4) -> Path:
    """A SQuAD v2 dev file: articles of paragraphs, each with one answerable and one unanswerable question."""
    paras = _paragraphs()
    data = []
    k = 0
    for a in range(articles):
        ps = []
        for p in range(paragraphs):
            context = paras[k]
            k += 1
            answer = context.split()[2]
            ps.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "question": f"Which word comes third in paragraph {p} of article {a}?",
                            "id": f"q{a}-{p}",
                            "answers": [{"text": answer, "answer_start": context.index(answer)}],
                            "is_impossible": False,
                        },
                        {
                            "plausible_answers": [{"text": "x", "answer_start": 0}],
                            "question": f"What is never said in paragraph {p} of article {a}?",
                            "id": f"i{a}-{p}",
                            "answers": [],
                            "is_impossible": True,
                        },
                    ],
                }
            )
        data.append({"title": f"Article_{a}", "paragraphs": ps})
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def write_hotpotqa(path: Path, questions: int = 8) -> Path:
    """A HotpotQA dev distractor file: each question with ten titled paragraphs of sentences."""
    paras = _paragraphs()
    items = []
    for q in range(questions):
        context = []
        for j in range(10):
            text = paras[(q * 7 + j) % len(paras)]
            sentences = [s + " " for s in re.split(r"(?<=[.!?]) ", text)][:4]
            context.append([f"Title {q}-{j}", sentences])
        items.append(
            {
                "_id": f"h{q}",
                "answer": context[0][1][0].split()[0],
                "question": f"What is the first word of the first paragraph of question {q}?",
                "supporting_facts": [[context[0][0], 0], [context[1][0], 0]],
                "context": context,
                "type": "bridge",
                "level": "hard",
            }
        )
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def write_english_words(path: Path, words: int = 30_000) -> Path:
    """english_words.json as RULER ships it: an object whose values are the words."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = {}
    for i in range(words):
        w, n = "", i + 1
        while n:
            n, r = divmod(n - 1, 26)
            w = letters[r] + w
        out[str(i)] = "w" + w
    path.write_text(json.dumps(out), encoding="utf-8")
    return path
