"""Special-token ids declared in a tokenizer's files against the ids `tokenizers` assigns: a difference is a
warning naming the token and both ids; a consistent tokenizer loads silently, from the disk cache too."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from tests.conftest import python_prose
from tokenization import SpecialTokenIdWarning, cache, load_tokenizer


def _train(folder: Path, eos_in_template: int | None = None) -> Path:
    """A small byte-level BPE with two special tokens and a post-processor appending `<|endoftext|>`.

    The post-processor declares `eos_in_template` as that token's id (its true id when None).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(python_prose(), trainer=trainer)
    eos = tokenizer.token_to_id("<|endoftext|>")
    declared = eos if eos_in_template is None else eos_in_template
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", declared)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def _write_config(folder: Path, decoder: dict[int, str]) -> None:
    """tokenizer_config.json with `added_tokens_decoder` as transformers writes it (id strings as keys)."""
    entries = {
        str(i): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, s in decoder.items()
    }
    config = {"added_tokens_decoder": entries, "eos_token": "<|endoftext|>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    """An empty conversion cache and no engines in memory, so each test builds and then reads from disk."""
    monkeypatch.setenv("LONGTROVE_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget_engines_in_memory()
    yield
    cache.forget_engines_in_memory()


def test_declared_ids_that_tokenizers_does_not_assign_are_a_warning_naming_both(tmp_path, fresh_cache):
    folder = tmp_path / "edited"
    path = _train(folder, eos_in_template=999)
    data = json.loads(path.read_text(encoding="utf-8"))
    # Hand-edited as such files are: `<pad>` dropped from the vocabulary but still declared, with a far id.
    del data["model"]["vocab"]["<pad>"]
    next(t for t in data["added_tokens"] if t["content"] == "<pad>")["id"] = 7000
    path.write_text(json.dumps(data))
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(path))  # the ids tokenizers itself assigns
    eos, pad = reference.token_to_id("<|endoftext|>"), reference.token_to_id("<pad>")
    assert pad != 7000 and eos != 999
    _write_config(folder, {5: "<|endoftext|>", pad: "<pad>"})

    expected = [
        f"'<pad>' is declared as id 7000 in tokenizer.json added_tokens but tokenizers assigns id {pad}",
        f"'<|endoftext|>' is declared as id 999 in tokenizer.json post_processor but tokenizers assigns id {eos}",
        f"'<|endoftext|>' is declared as id 5 in tokenizer_config.json added_tokens_decoder but tokenizers "
        f"assigns id {eos}",
    ]
    for attempt in ("built", "from the disk cache"):
        with pytest.warns(SpecialTokenIdWarning) as caught:
            tok = load_tokenizer(folder, eos_token="<|endoftext|>", pad_token="<pad>")
        (warning,) = [w for w in caught if w.category is SpecialTokenIdWarning]
        message = str(warning.message)
        assert message.startswith(str(path)), attempt
        for part in expected:
            assert part in message, (attempt, part)
        assert f"'<pad>' is declared as id {pad} " not in message, attempt  # the config's true id is no issue
        assert message.count(" is declared as id ") == len(expected), attempt
        # The ids in use are the assigned ones.
        assert (tok.eos_id, tok.pad_id) == (eos, pad), attempt
        cache.forget_engines_in_memory()


def test_consistent_tokenizer_loads_without_a_warning(tmp_path, fresh_cache):
    folder = tmp_path / "consistent"
    path = _train(folder)
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(path))
    eos, pad = reference.token_to_id("<|endoftext|>"), reference.token_to_id("<pad>")
    _write_config(folder, {eos: "<|endoftext|>", pad: "<pad>"})
    for attempt in ("built", "from the disk cache"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tok = load_tokenizer(folder, eos_token="<|endoftext|>", pad_token="<pad>")
        assert (tok.eos_id, tok.pad_id) == (eos, pad), attempt
        cache.forget_engines_in_memory()
