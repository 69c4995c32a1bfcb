"""Special-token ids as the files declare them, against the ids `tokenizers` assigns.

A tokenizer.json lists each added token with an id, its post-processor names the ids it inserts, and a
tokenizer_config.json beside it repeats them in `added_tokens_decoder`. `tokenizers` does not use the declared
id of an added token: a token already in the vocabulary keeps its vocabulary id, a new one gets the next free
id. When the two differ, the file was edited by hand or assembled from parts, and whoever trusted the declared
id (a trainer's eos id, a post-processor's BOS) gets another token than `encode` produces. The ids this package
uses are always the assigned ones; the difference is reported so that it can be fixed at its source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

# (token string, where it is declared, declared id)
Declared = tuple[str, str, int]


def _as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _post_processor_ids(processor: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    kind = processor.get("type")
    if kind == "Sequence":
        for step in processor.get("processors") or []:
            if isinstance(step, Mapping):
                yield from _post_processor_ids(step)
    elif kind == "TemplateProcessing":
        for entry in (processor.get("special_tokens") or {}).values():
            if isinstance(entry, Mapping):
                yield from zip(entry.get("tokens") or [], entry.get("ids") or [], strict=False)
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("cls", "sep"):
            pair = processor.get(key)
            if isinstance(pair, list | tuple) and len(pair) == 2:
                yield pair[0], pair[1]


def _special_entries(entries: Iterable[tuple[Any, Any]], where: str) -> list[Declared]:
    """Declarations of the special ones among (raw id, added-token object) pairs; malformed ones are skipped."""
    declared: list[Declared] = []
    for raw_id, token in entries:
        token_id = _as_id(raw_id)
        is_special = (
            isinstance(token, Mapping) and token.get("special") and isinstance(token.get("content"), str)
        )
        if is_special and token_id is not None:
            declared.append((token["content"], where, token_id))
    return declared


def declared_in_tokenizer_json(data: Mapping[str, Any]) -> list[Declared]:
    """Ids declared for special tokens in a parsed tokenizer.json: `added_tokens` and the post-processor."""
    added = [(t.get("id"), t) for t in data.get("added_tokens") or [] if isinstance(t, Mapping)]
    declared = _special_entries(added, "tokenizer.json added_tokens")
    processor = data.get("post_processor")
    if isinstance(processor, Mapping):
        for content, raw_id in _post_processor_ids(processor):
            token_id = _as_id(raw_id)
            if isinstance(content, str) and token_id is not None:
                declared.append((content, "tokenizer.json post_processor", token_id))
    return declared


def declared_in_tokenizer_config(config: Mapping[str, Any]) -> list[Declared]:
    """Ids declared for special tokens in tokenizer_config.json's `added_tokens_decoder`."""
    decoder = config.get("added_tokens_decoder")
    if not isinstance(decoder, Mapping):
        return []
    return _special_entries(decoder.items(), "tokenizer_config.json added_tokens_decoder")


def id_mismatches(declared: list[Declared], assigned: Callable[[str], int | None]) -> list[list[Any]]:
    """[token, where, declared id, assigned id (None: no such token)] for every declaration `assigned` denies.

    JSON-able, so that the conversion cache can keep it.
    """
    out: list[list[Any]] = []
    for content, where, token_id in declared:
        actual = assigned(content)
        if actual != token_id:
            out.append([content, where, token_id, actual])
    return out


def describe_mismatches(source: str, mismatches: list[list[Any]]) -> str:
    """One line naming each token, its declared id and the id `tokenizers` assigns."""
    parts = [
        f"{content!r} is declared as id {declared} in {where} but tokenizers assigns "
        + ("it no id" if actual is None else f"id {actual}")
        for content, where, declared, actual in mismatches
    ]
    return (
        f"{source}: special-token ids differ from the ones tokenizers assigns (the assigned ids are used): "
        + "; ".join(parts)
    )
