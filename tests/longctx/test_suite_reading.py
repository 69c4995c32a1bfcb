"""Reading suite lines the way the runner does: the prompt's own JSON text, found without decoding the line."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from longctx.client import EvalConfig, build_request
from longctx.suite import OFFSETS_FILE
from longctx.suite_reader import SuiteError, index_suite, iter_suite, raw_string_field, suite_files

# Texts that trip a naive scan: escaped quotes and backslashes in every position, a fake key inside the text,
# a backslash at the very end, non-ASCII and control characters.
HOSTILE = [
    "",
    'plain "quoted" text',
    "ends with a backslash \\",
    'two backslashes then a quote \\\\" and more',
    '", "prompt": "not me',
    '\\", "prompt": "not me either\\',
    "line\nbreak\ttab\u0001control",
    "caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028",
    '{"prompt": "nested text"}',
]


def _line(prompt: str, *, separators: tuple[str, str], ensure_ascii: bool, prompt_first: bool) -> bytes:
    fields = {
        "id": "s-1",
        "task": "niah_single_1",
        "details": {"prompt": "a decoy: a nested key of the same name"},
        "messages": [{"role": "user", "content": prompt + ' "prompt": "'}],
    }
    items = [("prompt", prompt), *fields.items()] if prompt_first else [*fields.items(), ("prompt", prompt)]
    return json.dumps(dict(items), separators=separators, ensure_ascii=ensure_ascii).encode()


@pytest.mark.parametrize("prompt", HOSTILE)
@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":"), (" ,  ", " :  ")])
@pytest.mark.parametrize("ensure_ascii", [False, True])
@pytest.mark.parametrize("prompt_first", [False, True])
def test_raw_prompt_is_the_top_level_prompt_as_written(prompt, separators, ensure_ascii, prompt_first):
    line = _line(prompt, separators=separators, ensure_ascii=ensure_ascii, prompt_first=prompt_first)
    raw = raw_string_field(line, "prompt")
    assert raw is not None and bytes(raw) in line
    assert json.loads(bytes(raw)) == prompt


def test_raw_prompt_survives_random_escapes():
    rng = random.Random(7)
    alphabet = ['"', "\\", ",", ":", "{", "}", "[", "]", " ", "a", "\n", "\u00e9", "prompt"]
    for _ in range(300):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        line = orjson.dumps({"details": {"prompt": prompt[::-1]}, "prompt": prompt, "x": [prompt]})
        assert json.loads(bytes(raw_string_field(line, "prompt"))) == prompt


def test_no_top_level_string_prompt():
    assert raw_string_field(b'{"details": {"prompt": "nested only"}}', "prompt") is None
    assert raw_string_field(b'{"prompt": 12, "x": "\\"prompt\\": \\"y\\""}', "prompt") is None


def _one_line_suite(folder, **fields) -> dict:
    """A suite of one niah_single_1 line at 1K: the required fields, then `fields`."""
    line = {
        "id": "t-1k-00000",
        "task": "niah_single_1",
        "length": 1024,
        "references": ["42"],
        "max_new_tokens": 16,
        **fields,
    }
    (folder / "niah_single_1").mkdir()
    (folder / "niah_single_1" / "1k.jsonl").write_text(json.dumps(line, ensure_ascii=False) + "\n")
    return line


def test_completion_body_carries_the_prompt_bytes_unchanged(tmp_path):
    prompt = 'Text with "quotes", a backslash \\ and caf\u00e9.\nQuestion?'
    line = _one_line_suite(
        tmp_path, seed=3, prompt=prompt, messages=[{"role": "user", "content": "the chat form"}]
    )
    [sample] = iter_suite(tmp_path)
    assert "messages" not in sample  # never decoded in completion mode
    route, body = build_request(sample, EvalConfig(endpoint="http://127.0.0.1:9/v1", model="m"))
    assert route == "/v1/completions"
    sent = json.loads(body)
    assert sent["prompt"] == prompt and sent["max_tokens"] == 16 and sent["seed"] == 3
    [chat_sample] = iter_suite(tmp_path, chat=True)
    assert (
        "prompt_json" not in chat_sample and "messages" not in chat_sample
    )  # kept as JSON text, not decoded
    assert json.loads(bytes(chat_sample["messages_json"])) == line["messages"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "prompt": "unterminated}', r"1k\.jsonl:1: not valid JSON"),
        ('["a list"]', r"1k\.jsonl:1: expected a JSON object"),
        (
            '{"id": "a", "task": "t", "length": 1, "references": ["x"], "max_new_tokens": 1, "prompt": 5}',
            r"1k\.jsonl:1: field 'prompt' must be a string",
        ),
        (
            '{"id": "a", "task": "t", "length": 1, "references": [], "max_new_tokens": 1, "prompt": "p"}',
            r"1k\.jsonl:1: field 'references' must be a non-empty list",
        ),
        ('{"id": "a", "prompt": "p\xff"}', r"1k\.jsonl:1: not valid JSON"),
    ],
)
def test_bad_lines_name_the_file_line_and_field(tmp_path, text, message):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "1k.jsonl").write_bytes(text.encode("latin-1") + b"\n")
    with pytest.raises(SuiteError, match=message):
        list(iter_suite(tmp_path))


# ----------------------------------------------------------------------------- suites with the builder's offsets


@pytest.fixture(scope="module")
def built_suite(tmp_path_factory, chat_tokenizer_dir):
    from tests.longctx.test_eval_support import make_suite

    return make_suite(
        tmp_path_factory.mktemp("built"),
        str(chat_tokenizer_dir),
        lengths=[1024, 2048],
        depths=[0.0, 50.0, 100.0],
        tasks=("niah_single_1", "niah_multivalue"),
    )


def _read(suite, *, chat):
    return [
        {k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in s.items() if k != "_where"}
        for s in iter_suite(suite, chat=chat)
    ]


@pytest.mark.parametrize("chat", [False, True])
def test_offsets_give_the_same_samples_as_reading_lines_in_full(built_suite, tmp_path, chat):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_suite, copy)
    (copy / OFFSETS_FILE).unlink()
    fast, full = _read(built_suite, chat=chat), _read(copy, chat=chat)
    assert len(fast) == 12 and fast == full
    for sample, line in zip(
        fast, [json.loads(x) for p in suite_files(built_suite) for x in p.open()], strict=True
    ):
        if chat:
            assert json.loads(sample["messages_json"]) == line["messages"] and "prompt_json" not in sample
            assert sample["message_roles"] == [m["role"] for m in line["messages"]]
        else:
            assert json.loads(sample["prompt_json"]) == line["prompt"] and "messages" not in sample


def test_a_file_changed_after_the_build_is_validated_in_full(built_suite, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_suite, copy)  # copytree keeps modification times: the offsets still apply
    target = copy / "niah_multivalue" / "2k.jsonl"
    lines = target.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"prompt": "', b'"prompt": "\\q', 1)  # an invalid escape, offsets shift
    target.write_bytes(b"\n".join(lines))
    with pytest.raises(SuiteError, match=r"niah_multivalue/2k\.jsonl:2: not valid JSON"):
        list(iter_suite(copy))


def test_offsets_that_do_not_fit_the_file_are_an_error_naming_the_line(built_suite, tmp_path):
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_suite, copy)
    index = json.loads((copy / OFFSETS_FILE).read_text())
    index["files"]["niah_multivalue/1k.jsonl"]["lines"][2]["prompt"][0] += (
        7  # the prompt's start, a few bytes off
    )
    (copy / OFFSETS_FILE).write_text(json.dumps(index))
    stat = (built_suite / "niah_multivalue" / "1k.jsonl").stat()
    os.utime(copy / "niah_multivalue" / "1k.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(
        SuiteError, match=r"niah_multivalue/1k\.jsonl:3: the line does not match .*offsets\.json"
    ):
        list(iter_suite(copy))


def test_top_level_value_skips_nested_keys_of_the_same_name():
    from longctx.suite_reader import top_level_value
    from longctx.transport import reply_count

    reply = b'{"meta": {"count": 3}, "tokens": [1, 2, 3], "count" : 131072}'
    assert reply[top_level_value(reply, "count") :] == b"131072}"
    assert reply_count(reply) == 131072
    assert reply_count(orjson.dumps({"count": 12, "tokens": list(range(1000))})) == 12
    assert top_level_value(b'{"meta": {"count": 3}}', "count") is None


def test_index_makes_a_suite_from_elsewhere_read_like_a_built_one(tmp_path):
    """Other key orders and separators, messages first, a blank line: indexed, then read through the offsets."""
    rng = random.Random(3)
    folder = tmp_path / "foreign"
    (folder / "niah_single_1").mkdir(parents=True)
    lines = []
    for i in range(6):
        prompt = "".join(rng.choice(['"', "\\", "a", " ", "\u00e9", "\n", "{", "]"]) for _ in range(200))
        sample = {
            "messages": [{"role": "user", "content": prompt[::-1]}, {"role": "assistant", "content": "A:"}],
            "id": f"n-1k-{i:05d}",
            "details": {"prompt": "decoy", "messages": ["decoy"]},
            "task": "niah_single_1",
            "length": 1024,
            "references": [str(i)],
            "max_new_tokens": 8,
            "prompt": prompt,
        }
        seps = [(", ", ": "), (",", ":")][i % 2]
        lines.append(json.dumps(sample, separators=seps, ensure_ascii=bool(i % 3)))
    lines.insert(3, "")
    (folder / "niah_single_1" / "1k.jsonl").write_text("\n".join(lines) + "\n")
    full = {chat: _read(folder, chat=chat) for chat in (False, True)}
    files = index_suite(folder)
    rows = files["niah_single_1/1k.jsonl"]["lines"]
    assert [row["line"] for row in rows] == [1, 2, 3, 5, 6, 7]  # the blank line 4 is skipped, numbers kept
    assert all("prompt" in row and "messages" in row for row in rows)
    for chat in (False, True):
        assert _read(folder, chat=chat) == full[chat]
    index = json.loads((folder / OFFSETS_FILE).read_text())
    index["files"]["niah_single_1/1k.jsonl"]["lines"][4]["messages"][1] -= 1
    (folder / OFFSETS_FILE).write_text(json.dumps(index))
    with pytest.raises(SuiteError, match=r"1k\.jsonl:6: the line does not match"):
        list(iter_suite(folder, chat=True))


def test_index_command_reindexes_an_edited_suite(built_suite, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from pipelines.cli import app

    copy = tmp_path / "copy"
    shutil.copytree(built_suite, copy)
    target = copy / "niah_single_1" / "1k.jsonl"
    target.write_bytes(target.read_bytes().replace(b'"depth": 50.0', b'"depth": 50.00', 1))
    before = json.loads((copy / OFFSETS_FILE).read_text())["files"]["niah_single_1/1k.jsonl"]
    assert before["size"] != target.stat().st_size  # stale: read in full until re-indexed
    result = CliRunner().invoke(app, ["longctx", "index", str(copy)])
    assert result.exit_code == 0, result.output
    assert "indexed 12 lines in 4 files" in result.output
    after = json.loads((copy / OFFSETS_FILE).read_text())["files"]["niah_single_1/1k.jsonl"]
    assert after["size"] == target.stat().st_size and after["mtime_ns"] == target.stat().st_mtime_ns
    assert _read(copy, chat=False) == _read(built_suite, chat=False)
    (copy / "niah_single_1" / "2k.jsonl").write_text('{"id": "x"}\n{broken\n')
    result = CliRunner().invoke(app, ["longctx", "index", str(copy)])
    assert result.exit_code == 2 and "2k.jsonl:2: not valid JSON" in result.output


def test_offsets_in_a_shape_not_understood_fall_back_to_full_validation(built_suite, tmp_path, caplog):
    import logging
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_suite, copy)
    index = json.loads((copy / OFFSETS_FILE).read_text())
    for entry in index["files"].values():
        entry["lines"] = [[row["start"], row["end"]] for row in entry["lines"]]  # another layout
    (copy / OFFSETS_FILE).write_text(json.dumps(index))
    with caplog.at_level(logging.WARNING):
        assert _read(copy, chat=False) == _read(built_suite, chat=False)
    assert "not understood" in caplog.text


@pytest.mark.parametrize(
    ("messages", "prefix", "sent", "continued"),
    [
        # the builder's form: the answer prefix is already the last, assistant, message
        ([{"role": "user", "content": 'Q "x"?'}, {"role": "assistant", "content": "A:"}], "A:", None, True),
        # a user message last: the answer prefix is appended as the assistant message to continue
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "Q\\?"}],
            " Answer:",
            [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "Q\\?"},
                {"role": "assistant", "content": " Answer:"},
            ],
            True,
        ),
        ([], "A:", [{"role": "assistant", "content": "A:"}], True),
        ([{"role": "user", "content": "Q"}], "", None, False),
        # more than role and content: decoded, and only role and content are sent
        (
            [{"role": "user", "content": "Q", "name": "x"}],
            "A:",
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A:"}],
            True,
        ),
    ],
)
@pytest.mark.parametrize("indexed", [False, True])
def test_chat_body_messages(tmp_path, messages, prefix, sent, continued, indexed):
    _one_line_suite(tmp_path, prompt="the completion form", messages=messages, answer_prefix=prefix)
    if indexed:
        index_suite(tmp_path)
    [sample] = iter_suite(tmp_path, chat=True)
    route, body = build_request(sample, EvalConfig(endpoint="http://127.0.0.1:9/v1", model="m", chat=True))
    request = json.loads(body)
    assert route == "/v1/chat/completions" and "prompt" not in request
    assert request["messages"] == (messages if sent is None else sent)
    assert request.get("continue_final_message", False) is continued
    assert request.get("add_generation_prompt", True) is not continued
