"""What loading one tokenizer.json costs, done once per content: the `JsonEngine`.

Parsing, fingerprinting, converting for the fast path and proving the conversion on the stress set take
seconds on a 100k vocabulary; `build_engine` does all of it, and `tokenization.cache` keeps the result in memory
and on disk so that every later load of the same content (in this process or a new worker) is cheap.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from tokenization.errors import TokenizerError
from tokenization.fastpath import build_fast_encoding, stress_failure
from tokenization.fingerprint import tokenizer_json_fingerprint
from tokenization.special_ids import declared_in_tokenizer_json, id_mismatches
from tokenization.textprep import AddedSpec


def parse_tokenizer_json(raw: str, where: str) -> dict[str, Any]:
    """The parsed tokenizer.json, or a TokenizerError naming `where` and the line of bad JSON."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TokenizerError(
            f"{where}: not a tokenizer.json (invalid JSON at line {exc.lineno}: {exc.msg})"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(
            f"{where}: not a tokenizer.json (no 'model' object; expected the Hugging Face format)"
        )
    return data


@dataclass
class JsonEngine:
    """What loading a tokenizer.json costs (parse, fingerprint, conversion, stress proof), done once per content.

    The `tokenizers` engine itself is built lazily when the fast path came from the disk cache: a worker
    process that only encodes never pays for it.
    """

    raw: str
    where: str
    fingerprint: str
    special: dict[str, int]
    vocab_size: int
    fast: Any = None  # tiktoken.Encoding when the fast path converts
    fast_params: dict[str, Any] = field(default_factory=dict)
    fast_reason: str | None = None  # why not, structurally
    stress_failure: str | None = None  # why not, on the stress set
    # [token, where, declared id, assigned id] of special tokens whose declared id tokenizers does not give
    special_id_mismatches: list[list[Any]] = field(default_factory=list)
    hf_obj: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hf(self) -> Any:
        """tokenizers.Tokenizer in text mode: special added tokens are not matched in text."""
        with self.lock:
            if self.hf_obj is None:
                self.hf_obj = text_mode_hf(self.raw, self.where)
            return self.hf_obj


def text_mode_hf(raw: str, where: str) -> Any:
    """A tokenizers.Tokenizer that encodes special-token strings as text and never pads or truncates."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer.from_str(raw)
    except Exception as exc:
        raise TokenizerError(f"{where}: the tokenizers library cannot load it ({exc})") from exc
    hf.encode_special_tokens = True
    hf.no_padding()
    hf.no_truncation()
    return hf


def build_engine(raw: str, where: str) -> JsonEngine:
    """Parse, fingerprint, convert and prove a tokenizer.json (`where` names it in errors)."""
    data = parse_tokenizer_json(raw, where)
    hf = text_mode_hf(raw, where)
    added = {int(i): AddedSpec.of(t) for i, t in hf.get_added_tokens_decoder().items()}
    engine = JsonEngine(
        raw=raw,
        where=where,
        fingerprint=tokenizer_json_fingerprint(data, {i: a.as_dict() for i, a in added.items()}),
        special={a.content: i for i, a in added.items() if a.special},
        vocab_size=int(hf.get_vocab_size(with_added_tokens=True)),
        special_id_mismatches=id_mismatches(declared_in_tokenizer_json(data), hf.token_to_id),
        hf_obj=hf,
    )
    engine.fast, engine.fast_params, engine.fast_reason = build_fast_encoding(data, added)
    if engine.fast is not None:
        engine.stress_failure = stress_failure(hf, raw, engine.fast, engine.fast_params)
    return engine
