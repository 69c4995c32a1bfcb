"""Reading a suite for the runner: its files, and each line's fields and prompt, at a small cost per line.

A line of a 1M-token suite holds megabytes twice over (`prompt` and `messages`), and the runner needs only one
of them, as JSON text to put in a request, plus a few small fields. Lines are read in place from a file map and
never decoded whole: for a file `longctx.suite` built and indexed in offsets.json (unchanged since), only the
small fields around the two values are parsed; any other line is validated whole by simdjson and its prompt
found by a scan that steps from quote to quote.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import simdjson

from longctx.suite import OFFSETS_FILE, OFFSETS_FORMAT

log = logging.getLogger(__name__)

Buffer = bytes | mmap.mmap
REQUIRED_FIELDS = ("id", "task", "length", "references", "max_new_tokens")


class SuiteError(ValueError):
    """A suite file or line that cannot be used; the message names the file, line and field."""


_LENGTH_NAME = re.compile(r"^(\d+)([km]?)$", re.IGNORECASE)


def length_of_name(stem: str) -> int | None:
    """`4k` -> 4096, `1m` -> 1048576, `5000` -> 5000 (suite file names); None for anything else."""
    m = _LENGTH_NAME.match(stem)
    if m is None:
        return None
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]


def suite_files(suite_dir: Path) -> list[Path]:
    """The suite's `<task>/<length>.jsonl` files (lengths as 4k, 1m or integers), ordered by task then length."""
    if not suite_dir.is_dir():
        raise SuiteError(f"{suite_dir}: not a suite folder (expected <task>/<length>.jsonl files)")
    files = [p for p in suite_dir.glob("*/*.jsonl") if length_of_name(p.stem) is not None]
    if not files:
        raise SuiteError(f"{suite_dir}: no <task>/<length>.jsonl files found")
    return sorted(files, key=lambda p: (p.parent.name, length_of_name(p.stem)))


def read_suite_meta(suite_dir: Path) -> dict[str, Any]:
    """suite.json if present (tokenizer, tasks, lengths, ...); an empty dict for a bare folder of JSONL."""
    path = suite_dir / "suite.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON ({exc})") from exc


def _lines(path: Path) -> Iterator[tuple[int, mmap.mmap, int, int]]:
    """(line number, file map, start, end) of each line of a JSONL file.

    Lines are read in place from the map, never copied out whole: a 1M-token line holds megabytes twice over
    (prompt and messages), and only the prompt is ever copied.
    """
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        # Not closed here: the prompts handed out are views of it, and it goes when the last of them does.
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    pos, lineno, size = 0, 0, len(mm)
    while pos < size:
        end = mm.find(b"\n", pos)
        end = size if end < 0 else end
        lineno += 1
        yield lineno, mm, pos, end
        pos = end + 1


# Fields the runner reads from a line besides the prompt or the messages; the rest (haystack provenance, notes,
# needle depths, ...) stays unread in the file.
_USED_FIELDS = (
    *REQUIRED_FIELDS,
    "token_count",
    "chat_token_count",
    "seed",
    "metric",
    "depth",
    "answer_prefix",
)
_COLON = re.compile(rb"\s*:\s*")
_BACKSLASH = 0x5C
_QUOTE = 0x22


def _string_end(line: Buffer, start: int) -> int:
    """Index of the quote that closes the JSON string whose first character is at `start`.

    A quote closes the string unless an odd number of backslashes precede it; `bytes.find` jumps from quote to
    quote, so the cost is one step per quote in the text, not per byte.
    """
    pos = start
    while True:
        quote = line.find(b'"', pos)
        if quote < 0:
            raise ValueError("unterminated string")
        first = quote
        while first > start and line[first - 1] == _BACKSLASH:
            first -= 1
        if (quote - first) % 2 == 0:
            return quote
        pos = quote + 1


def top_level_value(line: Buffer, key: str, start: int = 0, end: int | None = None) -> int | None:
    """Where the value of the top-level `key` starts in the valid JSON object `line[start:end]` (bytes or a
    file map), found without parsing the rest; None when the object has no such key.

    In valid JSON an unescaped `"` always delimits a string, so `"key"` right after `{` or `,` and before `:` is
    a key; it is at the top level when the object up to it, closed with `}`, is itself a JSON object.
    """
    end = len(line) if end is None else end
    needle = b'"' + key.encode() + b'"'
    pos = start
    while (at := line.find(needle, pos, end)) >= 0:
        pos = at + len(needle)
        colon = _COLON.match(line, pos, end)
        before = line[start:at].rstrip()
        if colon is None or not before or before[-1:] not in (b"{", b","):
            continue
        head = before + b"}" if before[-1:] == b"{" else before[:-1] + b"}"
        try:
            if not isinstance(orjson.loads(head), dict):
                continue
        except orjson.JSONDecodeError:
            continue  # a key of a nested object
        return colon.end()
    return None


def raw_string_field(line: Buffer, key: str, start: int = 0, end: int | None = None) -> memoryview | None:
    """The JSON text (quotes and escapes as written) of the top-level string `key` of the valid JSON object
    `line[start:end]`; None when there is no such key or its value is not a string.

    Sending a prompt's own JSON text saves decoding megabytes of it into a `str` and encoding them back.
    """
    span = _string_span(line, key, start, end)
    return None if span is None else memoryview(line)[span[0] : span[1]]


def _string_span(line: Buffer, key: str, start: int, end: int | None) -> tuple[int, int] | None:
    """Where the top-level string `key` (quotes included) sits in the valid JSON object `line[start:end]`."""
    first = top_level_value(line, key, start, end)
    if first is None or first >= (len(line) if end is None else end) or line[first] != _QUOTE:
        return None
    return first, _string_end(line, first + 1) + 1


def _plain(value: Any) -> Any:
    """A simdjson value as plain Python (its lazy containers die with the parser's next document)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def read_offsets(suite_dir: Path) -> dict[str, Any]:
    """The builder's offsets.json (where each line's prompt and messages sit), or {} when missing or unreadable."""
    path = suite_dir / OFFSETS_FILE
    try:
        index = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("%s: ignored (%s); suite lines are read and validated in full", path, exc)
        return {}
    if not isinstance(index, dict) or index.get("format") != OFFSETS_FORMAT or index.get("version") != 1:
        return {}
    files = index.get("files")
    return files if isinstance(files, dict) else {}


def _fresh_rows(path: Path, entry: Any) -> list[dict[str, Any]] | None:
    """The offset rows of a file that is still the one the builder wrote (same size and modification time)."""
    if not isinstance(entry, dict):
        return None
    stat = path.stat()
    if entry.get("size") != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
        log.info("%s changed since the suite was built: its lines are read and validated in full", path)
        return None
    rows = entry.get("lines")
    if not isinstance(rows, list) or not all(
        isinstance(row, dict) and isinstance(row.get("start"), int) and isinstance(row.get("end"), int)
        for row in rows
    ):
        log.warning(
            "%s: its entry in %s is not understood; its lines are read and validated in full",
            path,
            OFFSETS_FILE,
        )
        return None
    return rows


_STAND_INS = {b'""': (0x22, 0x22), b"[]": (0x5B, 0x5D)}  # what each big value becomes, how it is bounded


def _indexed_lines(
    path: Path, rows: list[Any], chat: bool
) -> Iterator[tuple[str, dict[str, Any] | None, memoryview | None, Any]]:
    """(where, fields, prompt view, messages view) of each line of a file the builder indexed.

    Only the small fields around the prompt and the messages are parsed (the two values stand in as "" and
    []); both stay views of the file (the messages only in chat mode). A row that does not fit the file yields
    no fields.
    """
    with path.open("rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(fh.fileno()).st_size else b""
    view = memoryview(mm)
    for number, row in enumerate(rows, 1):
        where = f"{path}:{row.get('line', number)}"
        try:
            start, end = row["start"], row["end"]
            p0, p1 = row.get("prompt") or (None, None)
            m0, m1 = row.get("messages") or (None, None)
            cuts = sorted(
                (a, b, stand_in) for a, b, stand_in in ((p0, p1, b'""'), (m0, m1, b"[]")) if a is not None
            )
            pieces, pos = [], start
            for a, b, stand_in in cuts:
                first, last = _STAND_INS[stand_in]
                if not (pos <= a < b <= end and mm[a] == first and mm[b - 1] == last):
                    raise ValueError(where)
                pieces += [view[pos:a], stand_in]
                pos = b
            if not (pos <= end <= len(mm)) or (end < len(mm) and mm[end] != 0x0A):
                raise ValueError(where)
            pieces.append(view[pos:end])
            fields = orjson.loads(b"".join(pieces))
            messages = view[m0:m1] if chat and m0 is not None else None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            yield where, None, None, None
            continue
        yield where, fields, (view[p0:p1] if p0 is not None else None), messages


def iter_suite(suite_dir: Path, *, chat: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the suite's samples lazily (a 1M-token suite does not fit in memory), validating each line.

    In completion mode the prompt stays in its JSON form (`prompt_json`, a view of the file) to be sent as is,
    and the messages are never decoded; in chat mode the messages do (`messages_json`, with `message_roles`
    read from them) unless they hold more than plain role and content, and the prompt is never read. For a
    file the builder indexed in offsets.json (and that has not changed since), only the small fields are
    parsed; any other line is validated whole by simdjson, and only the fields the runner uses are read out.
    """
    offsets = read_offsets(suite_dir)
    parser, messages_parser = simdjson.Parser(), simdjson.Parser()
    for path in suite_files(suite_dir):
        rel = path.relative_to(suite_dir).as_posix()
        rows = _fresh_rows(path, offsets.get(rel)) if rel in offsets else None
        if rows is not None:
            for where, fields, prompt, messages in _indexed_lines(path, rows, chat):
                if fields is None or not isinstance(fields, dict):
                    raise SuiteError(
                        f"{where}: the line does not match {suite_dir / OFFSETS_FILE}; run `longtrove longctx "
                        f"index {suite_dir}` or delete that file"
                    )
                sample = {name: fields[name] for name in _USED_FIELDS if name in fields}
                _check_sample(where, sample, set(fields), chat)
                if chat:
                    if messages is None:
                        raise SuiteError(f"{where}: field 'messages' must be a list of messages")
                    try:
                        doc = messages_parser.parse(messages)
                    except ValueError as exc:
                        raise SuiteError(f"{where}: field 'messages' is not valid JSON ({exc})") from exc
                    try:
                        if _take_messages(sample, doc):
                            sample["messages_json"] = messages
                    finally:
                        del doc
                elif prompt is None:
                    raise SuiteError(f"{where}: field 'prompt' must be a string")
                else:
                    sample["prompt_json"] = prompt
                sample["_where"] = where
                yield sample
            continue
        for lineno, mm, start, end in _lines(path):
            where = f"{path}:{lineno}"
            doc = _parse_line(parser, mm, start, end, where)
            if doc is None:
                continue  # a blank line
            try:
                keys = set(doc.keys())
                sample = {name: _plain(doc[name]) for name in _USED_FIELDS if name in keys}
                if chat and "messages" in keys and _take_messages(sample, doc["messages"]):
                    sample["messages_json"] = _messages_view(mm, start, end)
            finally:
                del doc  # the parser refuses the next line while a lazy view of this one lives
            _check_sample(where, sample, keys, chat)
            if chat and not isinstance(sample.get("messages", []), list):
                raise SuiteError(f"{where}: field 'messages' must be a list of messages")
            if not chat:
                sample["prompt_json"] = raw_string_field(mm, "prompt", start, end)
                if sample["prompt_json"] is None:
                    raise SuiteError(f"{where}: field 'prompt' must be a string")
            sample["_where"] = where
            yield sample


def _parse_line(parser: simdjson.Parser, mm: mmap.mmap, start: int, end: int, where: str) -> Any:
    """The line as a lazy simdjson object, validated whole; None for a blank line. Release it (`del`) before
    parsing the next line: the parser refuses while a view of the last one lives."""
    try:
        with memoryview(mm) as whole, whole[start:end] as line:
            doc = parser.parse(line)
    except ValueError as exc:  # UnicodeDecodeError included
        if not mm[start:end].strip():
            return None
        raise SuiteError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, simdjson.Object):
        del doc
        raise SuiteError(f"{where}: expected a JSON object")
    return doc


def _take_messages(sample: dict[str, Any], messages: Any) -> bool:
    """Whether the (lazy) messages are plain role/content ones, which stay JSON text: their roles go in
    `message_roles` and the caller adds their text as `messages_json`. Anything else is decoded into `messages`."""
    roles = message_roles(messages)
    if roles is None:
        sample["messages"] = _plain(messages)
        return False
    sample["message_roles"] = roles
    return True


def _messages_view(mm: mmap.mmap, start: int, end: int) -> memoryview:
    at = top_level_value(mm, "messages", start, end)
    assert at is not None  # the key is there: simdjson found it
    return memoryview(mm)[at : container_end(mm, at, end)]


def message_roles(messages: Any) -> list[str] | None:
    """The roles of a (lazy, simdjson) list of plain `{"role", "content"}` messages, read without decoding any
    content; None for anything else, which is then decoded and sent the slower way."""
    if not isinstance(messages, simdjson.Array):
        return None
    roles: list[str] = []
    for message in messages:
        if not isinstance(message, simdjson.Object) or set(message.keys()) != {"role", "content"}:
            return None
        role = message["role"]
        if not isinstance(role, str):
            return None
        roles.append(role)
    return roles


def _check_sample(where: str, sample: dict[str, Any], keys: set[str], chat: bool) -> None:
    for name in (*REQUIRED_FIELDS, "messages" if chat else "prompt"):
        if name not in keys:
            raise SuiteError(f"{where}: field {name!r} is missing")
    if not isinstance(sample["references"], list) or not sample["references"]:
        raise SuiteError(f"{where}: field 'references' must be a non-empty list")


_STRUCTURE = re.compile(rb'["\[\]{}]')


def container_end(line: Buffer, start: int, end: int | None = None) -> int:
    """Index just past the JSON array or object that opens at `start` in valid JSON, stepping over its
    strings with `bytes.find` rather than byte by byte."""
    end = len(line) if end is None else end
    depth, pos = 0, start
    while (m := _STRUCTURE.search(line, pos, end)) is not None:
        char = line[m.start()]
        if char == _QUOTE:
            pos = _string_end(line, m.start() + 1) + 1
            continue
        depth += 1 if char in (0x5B, 0x7B) else -1
        pos = m.start() + 1
        if depth == 0:
            return pos
    raise ValueError("unterminated array or object")


def index_suite(suite_dir: Path) -> dict[str, Any]:
    """Validate every line of a suite and write its offsets.json, as `longctx.suite` does for the suites it
    builds: afterwards `longctx eval` parses only the small fields of each line. Returns the files' entries."""
    from longctx.suite import offsets_entry, write_offsets

    parser = simdjson.Parser()
    files: dict[str, dict[str, Any]] = {}
    for path in suite_files(suite_dir):
        rows: list[dict[str, Any]] = []
        for lineno, mm, start, end in _lines(path):
            doc = _parse_line(parser, mm, start, end, f"{path}:{lineno}")
            if doc is None:
                continue  # a blank line
            del doc
            row: dict[str, Any] = {"line": lineno, "start": start, "end": end}
            prompt = _string_span(mm, "prompt", start, end)
            if prompt is not None:
                row["prompt"] = list(prompt)
            messages = top_level_value(mm, "messages", start, end)
            if messages is not None and mm[messages] == 0x5B:
                row["messages"] = [messages, container_end(mm, messages, end)]
            rows.append(row)
        files[path.relative_to(suite_dir).as_posix()] = offsets_entry(path, rows)
    write_offsets(suite_dir, files)
    return files
