"""The disk cache of conversions: a second process loads from it, gets the same tokenizer, and never trusts a
broken or disabled cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.tokenization.conftest import edited_copy
from tokenization import FastPathWarning, cache, load_tokenizer, stress_texts


@pytest.fixture()
def fresh_process(tmp_path, monkeypatch):
    """An empty conversion cache and no in-memory engines, as in a new worker process."""
    monkeypatch.setenv("LONGTROVE_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget_engines_in_memory()
    yield tmp_path / "cache"
    cache.forget_engines_in_memory()


def test_second_load_comes_from_disk_and_is_identical(bpe_tokenizer_path, prose_texts, fresh_process):
    first = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    files = list(fresh_process.glob("*.npz"))
    assert len(files) == 1
    cache.forget_engines_in_memory()
    second = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    assert second._hf_obj is None  # the tokenizers engine was not needed to load it
    assert (second.backend, second.fingerprint, second.vocab_size, second.eos_id, second.special_tokens) == (
        first.backend,
        first.fingerprint,
        first.vocab_size,
        first.eos_id,
        first.special_tokens,
    )
    texts = stress_texts() + prose_texts
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first.encode_batch(texts), second.encode_batch(texts), strict=True)
    )
    assert second.decode(second.encode("decode builds it on demand")) == "decode builds it on demand"


def test_cached_stress_failure_still_falls_back(bpe_tokenizer_path, tmp_path, fresh_process):
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "gaps" / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": r"\p{L}+|\p{N}+"}),
    )
    with pytest.warns(FastPathWarning):
        assert load_tokenizer(path).backend == "tokenizers"
    cache.forget_engines_in_memory()
    with pytest.warns(FastPathWarning, match="Hello world"):
        assert load_tokenizer(path).backend == "tokenizers"


def test_broken_cache_file_is_ignored_and_rewritten(bpe_tokenizer_path, fresh_process):
    expected = load_tokenizer(bpe_tokenizer_path).encode("cache me").tolist()
    (cached,) = fresh_process.glob("*.npz")
    cached.write_bytes(b"truncated")
    cache.forget_engines_in_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = load_tokenizer(bpe_tokenizer_path)
    assert tok.backend == "tiktoken" and tok.encode("cache me").tolist() == expected
    assert cached.stat().st_size > 1000


def test_cache_can_be_disabled(bpe_tokenizer_path, fresh_process, monkeypatch):
    monkeypatch.setenv("LONGTROVE_CACHE_DIR", "")
    assert load_tokenizer(bpe_tokenizer_path).backend == "tiktoken"
    assert not fresh_process.exists()
