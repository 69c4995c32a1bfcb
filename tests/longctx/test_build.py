"""`longtrove longctx build`: files, suite.json, byte-identical output whatever the number of workers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.suite import OFFSETS_FILE, SuiteConfig, build_suite, plan, read_suite, resolve_tasks, sample_seed
from pipelines.cli import app
from tests.conftest import CL100K_OFFLINE

FIELDS = {
    "id", "task", "length", "reserve", "depth", "prompt", "messages", "answer_prefix", "references",
    "token_count", "chat_token_count", "max_new_tokens", "seed", "metric", "needle_depths", "haystack", "notes",
}  # fmt: skip


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["longctx", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, chat_tokenizer_dir: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("suites")
    common = [
        "--tokenizer",
        str(chat_tokenizer_dir),
        "--tasks",
        "niah_single_1,vt,fwe",
        "--lengths",
        "4k,5000",
        "--depths",
        "0,50,100",
        "--samples",
        "3",
        "--seed",
        "9",
        "--no-progress",
    ]
    run("build", *common, "--out", str(base / "one"), "--workers", "1")
    run("build", *common, "--out", str(base / "two"), "--workers", "2")
    return base / "one", base / "two"


def _offsets_without_times(folder: Path) -> dict:
    index = json.loads((folder / OFFSETS_FILE).read_text())
    for entry in index["files"].values():
        entry.pop("mtime_ns")
    return index


def test_same_arguments_give_byte_identical_files_with_one_or_two_workers(built: tuple[Path, Path]) -> None:
    one, two = built
    files = tree(one)
    others = tree(two)
    # offsets.json records each file's modification time, which differs from build to build; the rest is equal.
    assert {k: v for k, v in files.items() if k != OFFSETS_FILE} == {
        k: v for k, v in others.items() if k != OFFSETS_FILE
    }
    assert _offsets_without_times(one) == _offsets_without_times(two)
    assert sorted(files) == sorted(
        ["suite.json", OFFSETS_FILE]
        + [f"{t}/{n}.jsonl" for t in ("niah_single_1", "vt", "fwe") for n in ("4k", "5000")]
    )
    assert not [p for p in one.rglob(".*")]  # no temporary files left behind


def test_offsets_point_at_each_prompt_and_messages(built: tuple[Path, Path]) -> None:
    one, _ = built
    index = json.loads((one / OFFSETS_FILE).read_text())
    assert index["format"] == "longtrove.longctx-offsets" and len(index["files"]) == 6
    for rel, entry in index["files"].items():
        data = (one / rel).read_bytes()
        assert entry["size"] == len(data) and entry["mtime_ns"] == (one / rel).stat().st_mtime_ns
        lines = data.split(b"\n")[:-1]
        assert len(entry["lines"]) == len(lines)
        for number, (row, line) in enumerate(zip(entry["lines"], lines, strict=True), 1):
            assert row["line"] == number and data[row["start"] : row["end"]] == line
            sample = json.loads(line)
            (p0, p1), (m0, m1) = row["prompt"], row["messages"]
            assert json.loads(data[p0:p1]) == sample["prompt"]
            assert json.loads(data[m0:m1]) == sample["messages"]


def test_lines_and_suite_json_describe_the_samples(
    built: tuple[Path, Path], chat_tokenizer_dir: Path
) -> None:
    from tokenization import load_tokenizer

    one, _ = built
    meta = read_suite(one)
    tok = load_tokenizer(chat_tokenizer_dir)
    assert meta["tokenizer"]["fingerprint"] == tok.fingerprint and meta["chat"] is True
    assert meta["lengths"] == [4096, 5000] and meta["depths"] == [0.0, 50.0, 100.0] and meta["seed"] == 9
    assert (
        meta["tasks"]["vt"]["max_new_tokens"] == 30 and meta["tasks"]["fwe"]["metric"] == "string_match_all"
    )
    for entry in meta["files"]:
        data = (one / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        lines = [json.loads(x) for x in data.decode().splitlines()]
        assert len(lines) == entry["samples"] == 3
        for i, line in enumerate(lines):
            assert set(line) >= FIELDS
            assert line["length"] == entry["length"] and line["task"] == entry["task"]
            assert line["seed"] == sample_seed(9, entry["task"], entry["length"], i)
            assert len(tok.encode(line["prompt"])) == entry["length"] - line["reserve"] == line["token_count"]
            assert line["chat_token_count"] == line["token_count"]
            if entry["task"] != "fwe":
                assert line["depth"] == [0.0, 50.0, 100.0][i]
        assert len({line["id"] for line in lines}) == 3


def test_qa_tasks_need_data_and_unknown_tasks_are_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["longctx", "build", "--tokenizer", CL100K_OFFLINE, "--tasks", "qa_1", "--out", str(tmp_path / "x")],
    )
    assert result.exit_code != 0 and "qa_1 need QA data" in result.output
    result = CliRunner().invoke(
        app,
        [
            "longctx",
            "build",
            "--tokenizer",
            CL100K_OFFLINE,
            "--tasks",
            "niah_single_9",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "niah_single_9" in result.output
    assert not (tmp_path / "x").exists()


def test_all_tasks_include_qa_only_with_data(tmp_path: Path, prose_texts: list[str]) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "".join(
            json.dumps(
                {"context": t[:600], "question": f"What does topic {i} say first?", "answers": [t[:20]]}
            )
            + "\n"
            for i, t in enumerate(prose_texts[:30])
        )
    )
    cfg = SuiteConfig(
        tokenizer=CL100K_OFFLINE, tasks=["qa_1"], lengths=[4096], samples=2, qa_data={"qa_1": str(qa)}
    )
    meta = build_suite(cfg, tmp_path / "suite", progress=False)
    assert meta["qa_data"] == {"qa_1": "qa.jsonl"} and meta["chat"] is False
    lines = (tmp_path / "suite" / "qa_1" / "4k.jsonl").read_text().splitlines()
    assert [json.loads(x)["token_count"] for x in lines] == [4096 - 32] * 2
    assert resolve_tasks("all", qa={"qa_2"})[-2:] == ["fwe", "qa_2"] and "qa_1" not in resolve_tasks("all")
    jobs = plan(SuiteConfig(tokenizer="x", tasks=["vt", "cwe"], lengths=[4096, 8192], samples=3))
    assert [(j.task, j.length, j.index) for j in jobs][:4] == [
        ("vt", 4096, 0),
        ("vt", 4096, 1),
        ("vt", 4096, 2),
        ("vt", 8192, 0),
    ]


def test_rebuilding_into_a_folder_drops_the_older_suites_files(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    first = SuiteConfig(tokenizer=CL100K_OFFLINE, tasks=["niah_single_1", "vt"], lengths=[4096], samples=1)
    build_suite(first, out, progress=False)
    (out / "notes.txt").write_text("mine")
    second = SuiteConfig(tokenizer=CL100K_OFFLINE, tasks=["vt"], lengths=[4096], samples=2)
    meta = build_suite(second, out, progress=False)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jsonl")) == ["vt/4k.jsonl"]
    assert (out / "notes.txt").read_text() == "mine" and [f["samples"] for f in meta["files"]] == [2]


def test_unreadable_suite_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "suite.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="suite.json: not a longtrove.longctx-suite"):
        read_suite(tmp_path)


def test_a_length_below_the_answer_budget_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "longctx", "build", "--tokenizer", CL100K_OFFLINE, "--tasks", "niah_single_1,vt", "--lengths", "4k,64",
            "--samples", "1", "--out", str(tmp_path / "x"), "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    message = [line for line in result.output.splitlines() if "64" in line]
    assert message and "niah_single_1" in result.output and "128" in result.output
    assert not (tmp_path / "x" / "suite.json").exists()
