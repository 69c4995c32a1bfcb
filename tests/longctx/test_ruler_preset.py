"""`longctx build --preset ruler`: RULER's placement, whole units, exact cwe/fwe frequencies and RULER's data
(essays, SQuAD v2, HotpotQA in their original formats, written here), checked sample by sample."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from longctx.essays import load_essays
from longctx.haystack import NOISE_SENTENCE, HaystackError
from longctx.qa_data import load_qa
from longctx.suite import SuiteConfig, build_suite
from longctx.tasks import RULER_DEPTHS, RULER_TASKS, TASKS
from longctx.words import common_word_pool
from pipelines.cli import app
from tests.conftest import CL100K_OFFLINE
from tests.longctx.ruler_files import (
    write_english_words,
    write_essays,
    write_essays_json,
    write_hotpotqa,
    write_squad,
)

SAMPLES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ruler-data")
    essays = write_essays(base / "essays")
    return {
        "essays": essays,
        "essays_json": write_essays_json(essays, base / "PaulGrahamEssays.json"),
        "squad": write_squad(base / "dev-v2.0.json", articles=12, paragraphs=5),
        "hotpotqa": write_hotpotqa(base / "hotpot_dev_distractor_v1.json"),
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Path], chat_tokenizer_dir: Path):
    out = tmp_path_factory.mktemp("ruler-suite")
    cfg = SuiteConfig(
        tokenizer=str(chat_tokenizer_dir),
        tasks=list(RULER_TASKS),
        lengths=[4096],
        samples=SAMPLES,
        preset="ruler",
        essays=str(data["essays_json"]),
        qa_data={"qa_1": str(data["squad"]), "qa_2": str(data["hotpotqa"])},
    )
    meta = build_suite(cfg, out, progress=False)
    lines = {
        f["task"]: [json.loads(x) for x in (out / f["path"]).read_text().splitlines()] for f in meta["files"]
    }
    return out, meta, lines


def context_of(line: dict, head: str, tail: str) -> str:
    content = line["messages"][0]["content"]
    return content.rsplit(head, 1)[1].rsplit(tail, 1)[0]  # the task after any in-context example


def test_the_preset_builds_rulers_13_tasks_with_both_forms_within_the_length(
    suite, chat_tokenizer_dir
) -> None:
    from tokenization import load_tokenizer

    tok = load_tokenizer(chat_tokenizer_dir)
    _, meta, lines = suite
    assert meta["preset"] == "ruler" and list(meta["tasks"]) == list(RULER_TASKS)
    assert meta["essays"] == "PaulGrahamEssays.json"
    for task, rows in lines.items():
        assert len(rows) == SAMPLES
        target = 4096 - TASKS[task].max_new_tokens
        for row in rows:
            # Whole units: the prompt stops at the last unit that fits, in both forms, one context for both.
            assert row["token_count"] <= target and row["chat_token_count"] <= target, task
            assert row["token_count"] > target - 400, task
            assert row["haystack"]["partial_tokens"] == 0
            assert row["prompt"] == row["messages"][0]["content"] + row["answer_prefix"]
            assert len(tok.encode(row["prompt"])) == row["token_count"]  # what was built, counted


def test_essay_needles_go_between_whole_sentences_at_drawn_grid_depths(suite, data) -> None:
    _, _, lines = suite
    essay = load_essays(str(data["essays"])).units
    seen_depths = set()
    for row in lines["niah_single_2"] + lines["niah_single_3"]:
        context = context_of(row, "afterwards.\n", "\nWhat is")
        (needle,) = row["details"]["needles"]
        before, after = context.split(needle)
        n = row["haystack"]["units"]
        # RULER reads its essays from the first word and puts the needle after int(n * depth / 100) sentences.
        assert row["depth"] in RULER_DEPTHS
        k = int(n * row["depth"] / 100)
        assert before.strip() == " ".join(essay[:k])
        assert after.strip() == " ".join(essay[k:n])
        seen_depths.add(row["depth"])
    assert len(seen_depths) > 2  # drawn, not a fixed depth


def test_noise_needles_and_vt_chains_go_to_any_line(suite) -> None:
    _, _, lines = suite
    for row in lines["niah_single_1"]:
        body = context_of(row, "afterwards.\n", "\nWhat is").split("\n")
        (needle,) = row["details"]["needles"]
        assert body.count(needle) == 1 and set(body) == {NOISE_SENTENCE, needle}
    halves = Counter()
    for row in lines["vt"]:
        body = context_of(row, "in the following text.\n\n", "\nQuestion: Find").split("\n")
        chain = row["details"]["chain"]
        where = [body.index(c) for c in chain]
        assert where == sorted(where) and set(body) == {NOISE_SENTENCE, *chain}
        halves.update("first" if w < len(body) / 2 else "second" for w in where)
    # The chain is spread over the whole context (the default suite puts it from the depth to the end).
    assert halves["first"] > 0 and halves["second"] > 0


def test_cwe_lists_hold_rulers_exact_frequencies_and_end_with_a_whole_item(suite) -> None:
    _, _, lines = suite
    pool = set(common_word_pool())
    for row in lines["cwe"]:
        context = context_of(
            row, "Memorize the ones that appear most often.\n", "\nQuestion: What are the 10"
        )
        items = re.findall(r"(\d+)\. (\S+)", context)
        assert [int(i) for i, _ in items] == list(range(1, len(items) + 1))
        assert " ".join(f"{i}. {w}" for i, w in items) == context  # nothing else, nothing cut
        counts = Counter(w for _, w in items)
        assert sorted(counts.values(), reverse=True)[:10] == [30] * 10
        assert set(counts.values()) <= {30, 3} and set(counts) <= pool
        assert sorted(row["references"]) == sorted(w for w, c in counts.items() if c == 30)


def test_fwe_counts_follow_zipf_exactly(suite) -> None:
    _, _, lines = suite
    for row in lines["fwe"]:
        context = context_of(
            row, "three most frequently appeared coded words. ", "\nQuestion: Do not provide"
        )
        counts = Counter(context.split(" "))
        num_words = row["haystack"]["num_words"]
        vocab_size = row["haystack"]["vocab_size"]
        assert vocab_size == (4096 - 50) // 50
        k = np.arange(1, vocab_size + 1, dtype=np.float64)
        zeta2 = np.pi**2 / 6
        expected = sorted((c for c in (num_words * k**-2.0 / zeta2).astype(int) if c), reverse=True)
        assert sorted(counts.values(), reverse=True) == expected
        ranked = [w for w, _ in counts.most_common(4)]
        assert ranked[0] == "..." and sorted(ranked[1:]) == sorted(row["references"])


def test_qa_takes_questions_in_order_with_rulers_distractors_and_gold_position(suite, data) -> None:
    _, meta, lines = suite
    squad = json.loads(data["squad"].read_text())
    answerable = [
        (qa["question"], p["context"], [x["context"] for x in a["paragraphs"]])
        for a in squad["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
        if not qa["is_impossible"]
    ]
    for i, row in enumerate(lines["qa_1"]):
        question, gold, article = answerable[i]
        assert row["details"]["question"] == question and row["details"]["question_index"] == i
        docs = re.findall(
            r"Document \d+:\n(.*?)(?=\n\nDocument \d+:|\n\nAnswer the question)", row["prompt"], re.S
        )
        n = row["details"]["documents"]
        assert len(docs) == n < len(squad["data"]) * 5  # fewer documents than the file: RULER's distractors
        assert all(p in docs for p in article)  # the other paragraphs of its article come first
        # The gold document sits where RULER's shuffle of n documents (Random(seed)) puts the first one.
        order = list(range(n))
        random.Random(meta["seed"]).shuffle(order)
        assert docs.index(gold) == order.index(0) and row["details"]["gold_documents"] == [order.index(0) + 1]
    hotpot = json.loads(data["hotpotqa"].read_text())
    for i, row in enumerate(lines["qa_2"]):
        assert row["details"]["question"] == hotpot[i]["question"]
        for title, sentences in hotpot[i]["context"]:
            assert f"{title}\n{''.join(sentences)}" in row["prompt"]


def test_the_preset_refuses_to_build_without_rulers_data(tmp_path: Path, data) -> None:
    def build(*extra: str) -> str:
        args = ["longctx", "build", "--tokenizer", CL100K_OFFLINE, "--preset", "ruler", "--lengths", "4k"]
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--no-progress", *extra])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
        return " ".join(result.output.split())

    assert "download_paulgraham_essay.py" in build()
    essays = ("--essays", str(data["essays"]))
    assert "qa_1" in build(*essays) and "dev-v2.0.json" in build(*essays)
    qa = ("--qa-data", f"qa_1={data['squad']}", "--qa-data", f"qa_2={data['hotpotqa']}")
    assert "--haystack" in build(*essays, *qa, "--haystack", "noise")
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text(json.dumps({"context": "c", "question": "q", "answers": ["a"]}) + "\n")
    assert "original squad format" in build(*essays, "--qa-data", f"qa_1={jsonl}", "--tasks", "qa_1")
    swapped = ("--qa-data", f"qa_1={data['hotpotqa']}", "--tasks", "qa_1")
    assert "holds hotpotqa data" in build(*essays, *swapped)
    assert not (tmp_path / "x" / "suite.json").exists()


def test_essay_sources_agree_and_a_missing_one_says_how_to_get_it(tmp_path: Path, data) -> None:
    folder, as_json = load_essays(str(data["essays"])), load_essays(str(data["essays_json"]))
    assert folder.units == as_json.units and len(folder.units) > 100
    with pytest.raises(HaystackError, match="download_paulgraham_essay.py"):
        load_essays(str(tmp_path / "nowhere"))
    (tmp_path / "bad.json").write_text(json.dumps({"essays": []}))
    with pytest.raises(HaystackError, match="bad.json: expected RULER's PaulGrahamEssays.json"):
        load_essays(str(tmp_path / "bad.json"))


def test_squad_and_hotpotqa_files_are_read_as_ruler_reads_them(data, tmp_path: Path) -> None:
    squad = load_qa(data["squad"])
    assert squad.kind == "squad" and len(squad.questions) == 60  # the 60 unanswerable ones left out
    assert squad.documents == sorted(squad.documents) and len(squad.documents) == 60
    article = json.loads(data["squad"].read_text())["data"][0]["paragraphs"]
    first = squad.questions[1]  # the second answerable question: paragraph 1 of article 0
    assert squad.documents[first["gold"][0]] == article[1]["context"]
    assert sorted(squad.documents[i] for i in first["more"]) == sorted(
        p["context"] for i, p in enumerate(article) if i != 1
    )
    hotpot = load_qa(data["hotpotqa"])
    assert hotpot.kind == "hotpotqa" and all(len(q["gold"]) == 10 for q in hotpot.questions)
    assert all("\n" in hotpot.documents[i] for i in hotpot.questions[0]["gold"])
    (tmp_path / "broken.json").write_text(json.dumps({"data": [{"title": "x"}]}))
    with pytest.raises(ValueError, match="broken.json: article 0: not SQuAD v2"):
        load_qa(tmp_path / "broken.json")


def test_cwe_beyond_wonderwords_needs_rulers_english_word_list(tmp_path: Path) -> None:
    cfg = dict(
        tokenizer=CL100K_OFFLINE, tasks=["cwe"], lengths=[1 << 18], samples=1, preset="ruler", chat=False
    )
    with pytest.raises(ValueError, match="needs more than wonderwords' 8166 words.*english_words.json"):
        build_suite(SuiteConfig(**cfg), tmp_path / "a", progress=False)
    words = write_english_words(tmp_path / "english_words.json")
    meta = build_suite(SuiteConfig(**cfg, cwe_words=str(words)), tmp_path / "b", progress=False)
    row = json.loads((tmp_path / "b" / meta["files"][0]["path"]).read_text())
    assert row["haystack"]["kind"] == "english words" and row["haystack"]["words"] > 8166
    assert all(w.startswith("w") for w in row["references"]) and row["token_count"] <= (1 << 18) - 120
    counts = Counter(re.findall(r"\d+\. (w[a-z]+)", row["prompt"].rsplit("most often.\n", 1)[1]))
    assert Counter(counts.values()) == {30: 10, 3: row["haystack"]["words"] - 10}


def test_lm_eval_groups_print_rulers_average_per_length(
    suite, tmp_path: Path, chat_tokenizer_dir: Path
) -> None:
    pytest.importorskip("lm_eval")
    import logging

    from lm_eval.api.registry import get_model
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    from longctx.export_lmeval import export_lm_eval
    from longctx.reference_server import ReferenceServer
    from tokenization import load_tokenizer

    folder, _, _ = suite
    summary = export_lm_eval(folder, tmp_path / "lm-eval")
    assert summary["groups"] == ["longtrove_ruler_4k", "longtrove_ruler"]
    assert "--tasks longtrove_ruler " in summary["command"]
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tm = TaskManager(include_path=str(tmp_path / "lm-eval"), include_defaults=False)
    # A model that reads only the last 1024 tokens: some tasks pass, some fail, so the mean says something.
    with ReferenceServer(load_tokenizer(chat_tokenizer_dir), window_tokens=1024) as server:
        args = summary["command"].split("--model_args ")[1]
        lm = get_model("local-completions").create_from_arg_string(
            args.replace("http://HOST:PORT", server.url).replace("MODEL", "reference")
        )
        results = evaluate(
            lm=lm, task_dict=tm.load(["longtrove_ruler"]), bootstrap_iters=0, log_samples=False
        )
    scores = {name: r["score,none"] for name, r in results["results"].items()}
    tasks = [scores[f"longtrove_{t}_4k"] for t in RULER_TASKS]
    assert len(set(tasks)) > 1
    assert scores["longtrove_ruler_4k"] == pytest.approx(sum(tasks) / 13)
    assert scores["longtrove_ruler"] == pytest.approx(sum(tasks) / 13)
