"""Tokenizer fingerprints: a hash of exactly what decides the ids, not of file bytes.

Two tokenizer.json files that differ only in whitespace, key order, merges spelled `"a b"` or `["a", "b"]`,
or the decoder / post-processor (which never change the ids of `encode_batch`) get the same fingerprint; a
changed vocabulary entry, merge order, normalizer, pre-tokenizer or special token changes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Model fields that change ids. Everything else in a model block (e.g. a cache capacity) does not.
_MODEL_KEYS = (
    "type",
    "dropout",
    "unk_token",
    "continuing_subword_prefix",
    "end_of_word_suffix",
    "fuse_unk",
    "byte_fallback",
    "ignore_merges",
    "max_input_chars_per_word",
)


def _sha256_of(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def normalize_merges(merges: list[Any]) -> list[list[str]]:
    """Merges as `[left, right]` pairs, whichever of the two spellings tokenizer.json used."""
    if not merges or not isinstance(merges[0], str):
        return merges  # already pairs (the format tokenizers writes since 0.20); a file never mixes the two
    pairs: list[list[str]] = []
    for merge in merges:
        if isinstance(merge, str):
            left, _, right = merge.partition(" ")
            pairs.append([left, right])
        else:
            pairs.append([merge[0], merge[1]])
    return pairs


def tokenizer_json_fingerprint(data: Mapping[str, Any], added_tokens: Mapping[int, Mapping[str, Any]]) -> str:
    """Fingerprint a parsed tokenizer.json.

    `added_tokens` maps each added token's *effective* id (as the loaded `tokenizers.Tokenizer` assigns it,
    which can differ from the id written in the file) to its content and matching flags.
    """
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, Mapping):
        vocab_canon: Any = sorted(([token, int(i)] for token, i in vocab.items()), key=lambda p: (p[1], p[0]))
    else:  # Unigram: a list of [piece, score]
        vocab_canon = vocab
    canon = {
        "model": {key: model.get(key) for key in _MODEL_KEYS}
        | {"vocab": vocab_canon, "merges": normalize_merges(model.get("merges") or [])},
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": data.get("pre_tokenizer"),
        "added_tokens": [
            [
                int(i),
                tok["content"],
                bool(tok.get("special")),
                bool(tok.get("lstrip")),
                bool(tok.get("rstrip")),
                bool(tok.get("single_word")),
                bool(tok.get("normalized")),
            ]
            for i, tok in sorted(added_tokens.items())
        ],
    }
    return _sha256_of(canon)


def tiktoken_fingerprint(
    pat_str: str, mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int]
) -> str:
    """Fingerprint a tiktoken encoding from its regex, ranks and special tokens (not its name)."""
    ranks = sorted(mergeable_ranks.items(), key=lambda kv: kv[1])
    canon = {
        "pat_str": pat_str,
        "ranks": [[base64.b64encode(token).decode("ascii"), rank] for token, rank in ranks],
        "special_tokens": sorted([token, int(i)] for token, i in special_tokens.items()),
    }
    return _sha256_of(canon)
