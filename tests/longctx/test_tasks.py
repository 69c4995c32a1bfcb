"""RULER's tasks at exact token lengths: every sample is re-counted here with the tokenizer itself."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from longctx.assemble import AssemblyError
from longctx.drafts import BuildContext
from longctx.qa_data import load_qa
from longctx.sample import build_sample
from longctx.tasks import NEEDLE, QA_TASKS, TASKS, format_length, parse_length
from tests.conftest import CL100K_OFFLINE
from tokenization import load_tokenizer

SYNTHETIC = [t for t in TASKS if t not in QA_TASKS]
LENGTHS_4K_128K = [1 << p for p in range(12, 18)]


@pytest.fixture(scope="module")
def chat_tok(chat_tokenizer_dir: Path):
    return load_tokenizer(chat_tokenizer_dir, num_threads=1)


@pytest.fixture(scope="module")
def chat_ctx(chat_tok) -> BuildContext:
    return BuildContext(chat_tok)


@pytest.fixture(scope="module")
def cl100k_ctx() -> BuildContext:
    ctx = BuildContext(load_tokenizer(CL100K_OFFLINE, num_threads=1))
    assert ctx.chat is None  # a tiktoken encoding has no chat template
    return ctx


def chat_count(tok, line: dict) -> int:
    """The rendered chat (prefill continued) counted the way a server counts it: special tokens matched.

    transformers' continue_final_message cuts the rendering right after the final message; for a message with
    leading whitespace (all RULER answer prefixes) it keeps the message up to its last non-space character.
    """
    rendered = tok.apply_chat_template(line["messages"], add_generation_prompt=False)
    prefix = line["answer_prefix"].strip()
    rendered = rendered[: rendered.rindex(prefix) + len(prefix)]
    return len(tok.encode(rendered, allow_special=True))


def context_of(line: dict) -> str:
    return line["messages"][0]["content"]


def check_references(line: dict) -> None:
    """The answer can be read off the prompt: what RULER's scoring expects is really there."""
    task, prompt, refs = line["task"], line["prompt"], line["references"]
    kind = TASKS[task].kind
    assert prompt.endswith(line["answer_prefix"])
    if kind == "niah":
        type_v = TASKS[task].args["type_needle_v"]
        pattern = re.escape(f"One of the special magic {type_v} for ") + r"(\S+) is: (\S+?)\.(?=\s|$)"
        pairs = re.findall(pattern, prompt)
        assert NEEDLE.format(type_needle_v=type_v, key=pairs[0][0], value=pairs[0][1]) in prompt
        question = re.search(r"What (?:is|are all) the special magic \w+ for (.+?) mentioned", prompt).group(
            1
        )
        keys = re.split(r", and |, ", question)
        assert sorted(v for k, v in pairs if k in keys) == sorted(refs)
    elif kind == "variable_tracking":
        main = prompt[prompt.rindex("Memorize and track") :]  # after RULER's in-context example
        value = re.search(r"assigned the value (\d+) in the text above", main).group(1)
        assert f"VAR {refs[0]} = {value}" in main
        for a, b in zip(refs, refs[1:], strict=False):
            assert f"VAR {b} = VAR {a}" in main
    elif kind == "common_words_extraction":
        listing = prompt[prompt.rindex("Below is a numbered list") :]
        words = Counter(re.findall(r"(?:^|\s)\d+\. (\S+)(?= \d+\. |\n)", listing))
        top = {w for w, _ in words.most_common(len(refs))}
        assert top == set(refs)
        assert min(words[r] for r in refs) > max(c for w, c in words.items() if w not in refs)
    elif kind == "freq_words_extraction":
        body = prompt[prompt.index("coded words. ") + len("coded words. ") : prompt.index("\nQuestion:")]
        counts = Counter(body.split())
        ranked = [w for w, _ in counts.most_common() if w != "..."]
        assert ranked[:3] == refs


@pytest.mark.parametrize("task", SYNTHETIC)
def test_every_sample_4k_to_128k_is_exact_in_prompt_and_chat_form(chat_ctx: BuildContext, task: str) -> None:
    tok = chat_ctx.tok
    for i, length in enumerate(LENGTHS_4K_128K):
        line = build_sample(chat_ctx, TASKS[task], length, float(25 * (i % 5)), seed=1000 + i, index=i)
        want = length - TASKS[task].max_new_tokens
        assert line["reserve"] == line["max_new_tokens"] == TASKS[task].max_new_tokens
        assert len(tok.encode(line["prompt"])) == want == line["token_count"]
        assert chat_count(tok, line) == want == line["chat_token_count"]
        check_references(line)


@pytest.mark.slow
@pytest.mark.parametrize("task", SYNTHETIC)
def test_one_million_tokens_exact(cl100k_ctx: BuildContext, task: str) -> None:
    line = build_sample(cl100k_ctx, TASKS[task], 1 << 20, 50.0, seed=7, index=0)
    assert len(cl100k_ctx.tok.encode(line["prompt"])) == (1 << 20) - TASKS[task].max_new_tokens
    assert line["chat_token_count"] is None
    check_references(line)


def test_needle_lands_within_one_unit_of_its_depth(cl100k_ctx: BuildContext) -> None:
    tok = cl100k_ctx.tok
    _, units = cl100k_ctx.haystack("essay")
    unit_max = int(units.counts.max())
    for depth in (0.0, 10.0, 33.0, 50.0, 77.0, 100.0):
        line = build_sample(cl100k_ctx, TASKS["niah_single_2"], 32768, depth, seed=int(depth), index=0)
        prompt = line["prompt"]
        start = prompt.index("afterwards.\n") + len("afterwards.\n")
        end = prompt.rindex("\nWhat is the special magic number")
        needle = re.search(r"One of the special magic numbers for \S+ is: \d+\.", prompt).start()
        before = len(tok.encode(prompt[start:needle]))
        after = len(tok.encode(prompt[needle:end]))
        needle_tokens = len(tok.encode(prompt[needle : prompt.index(".", needle + 40) + 1]))
        haystack = before + after - needle_tokens
        assert abs(before - depth / 100 * haystack) <= unit_max + 2, (depth, before, haystack)
        assert abs(line["needle_depths"][0] - depth) * haystack / 100 <= unit_max


def test_same_seed_same_sample_and_other_seed_other_needles(cl100k_ctx: BuildContext) -> None:
    a = build_sample(cl100k_ctx, TASKS["niah_multikey_1"], 8192, 25.0, seed=3, index=0)
    b = build_sample(cl100k_ctx, TASKS["niah_multikey_1"], 8192, 25.0, seed=3, index=0)
    c = build_sample(cl100k_ctx, TASKS["niah_multikey_1"], 8192, 25.0, seed=4, index=0)
    assert json.dumps(a) == json.dumps(b)
    assert a["references"] != c["references"] and a["prompt"] != c["prompt"]
    assert a["haystack"]["start_unit"] != c["haystack"]["start_unit"]


def test_singular_wording_and_needle_text_follow_ruler(cl100k_ctx: BuildContext) -> None:
    one = build_sample(cl100k_ctx, TASKS["niah_single_1"], 4096, 50.0, seed=1, index=0)
    assert one["prompt"].startswith("A special magic number is hidden within the following text.")
    assert one["answer_prefix"].endswith("mentioned in the provided text is")
    assert (
        f"One of the special magic numbers for {one['prompt'].split('for ')[-1].split(' ')[0]} is:"
        in one["prompt"]
    )
    assert "The grass is green. The sky is blue." in one["prompt"]
    many = build_sample(cl100k_ctx, TASKS["niah_multivalue"], 4096, 50.0, seed=1, index=0)
    assert many["prompt"].startswith("Some special magic numbers are hidden within the following text.")
    assert len(many["references"]) == 4


def test_too_short_a_length_is_a_clear_error(cl100k_ctx: BuildContext) -> None:
    with pytest.raises(AssemblyError, match="too short"):
        build_sample(cl100k_ctx, TASKS["vt"], 400, 50.0, seed=1, index=0)


def test_lengths_parse_as_powers_of_two() -> None:
    assert parse_length("4k") == 4096 and parse_length("128K") == 131072 and parse_length("1m") == 1 << 20
    assert parse_length("5000") == 5000 and format_length(1 << 20) == "1m" and format_length(5000) == "5000"
    with pytest.raises(ValueError, match="4k"):
        parse_length("lots")


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory, prose_texts: list[str]) -> Path:
    """QA records over real paragraphs: the answer is a phrase of the gold paragraph."""
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    rows = []
    for i, text in enumerate(prose_texts[:60]):
        para = " ".join(text.split()[:120])
        answer = " ".join(para.split()[5:8])
        context = para if i % 2 else [para, " ".join(prose_texts[(i + 30) % len(prose_texts)].split()[:80])]
        rows.append(
            {
                "context": context,
                "question": f"Which words follow the fifth word of paragraph {i}?",
                "answers": [answer],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_qa_puts_the_gold_document_at_its_depth_and_hits_the_length(chat_tok, qa_file: Path) -> None:
    data = load_qa(qa_file)
    ctx = BuildContext(chat_tok, qa_data={"qa_1": data, "qa_2": data})
    for task, depth in (("qa_1", 0.0), ("qa_2", 50.0), ("qa_1", 100.0)):
        line = build_sample(ctx, TASKS[task], 16384, depth, seed=11, index=3)
        assert len(chat_tok.encode(line["prompt"])) == 16384 - 32 == line["token_count"]
        assert chat_count(chat_tok, line) == 16384 - 32
        question = (
            re.search(r"Question: (.+)$", line["prompt"].split("\n")[-1]).group(1).removesuffix(" Answer:")
        )
        record = next(q for q in data.questions if q["question"] == question)
        gold = data.documents[record["gold"][0]]
        docs = re.findall(r"Document (\d+):\n", line["prompt"])
        assert [int(d) for d in docs] == list(range(1, len(docs) + 1))  # numbering intact
        where = line["prompt"].index(gold)
        share = where / len(line["prompt"])
        assert abs(share - depth / 100) < 0.1
        assert line["references"] == record["answers"]


@pytest.mark.slow
def test_one_million_tokens_exact_for_qa(cl100k_ctx: BuildContext, qa_file: Path) -> None:
    data = load_qa(qa_file)
    ctx = BuildContext(cl100k_ctx.tok, qa_data={"qa_2": data})
    for task in ("qa_2",):  # qa_1 builds the same way (one gold document instead of several)
        line = build_sample(ctx, TASKS[task], 1 << 20, 50.0, seed=7, index=0)
        assert len(ctx.tok.encode(line["prompt"])) == (1 << 20) - 32 == line["token_count"]
        assert any("QA documents repeated" in n for n in line["notes"])  # 60 short records cannot fill 1M


def test_qa_data_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "question": "q", "answers": ["a"]}\n{"context": 3, "question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'context'"):
        load_qa(bad)


def test_counts_come_from_numpy_arrays(cl100k_ctx: BuildContext) -> None:
    _, units = cl100k_ctx.haystack("essay")
    assert units.ids.dtype == np.uint32 and units.offsets.dtype == np.int64
    assert int(units.counts.sum()) == len(units.ids)
