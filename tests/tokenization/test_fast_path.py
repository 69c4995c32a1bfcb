"""The tiktoken fast path gives exactly `tokenizers`' ids, is taken where it can be, and refused where not."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CL100K_OFFLINE, SPLIT_PATTERN
from tests.tokenization.conftest import edited_copy, hf_ids, hf_reference, train_gpt2_style
from tokenization import FastPathWarning, SpecialTokenIdWarning, load_tokenizer, stress_texts


def _texts(prose: list[str]) -> list[str]:
    return stress_texts() + prose


def _assert_same_ids(tok, path: Path, texts: list[str]) -> None:
    ours = tok.encode_batch(texts)
    ref = hf_ids(hf_reference(path), texts)
    assert len(ours) == len(ref)
    for text, a, b in zip(texts, ours, ref, strict=True):
        assert a.dtype == np.uint32
        assert a.tolist() == b, f"ids differ on {text[:60]!r}"


def test_trained_fixture_takes_fast_path_and_matches_tokenizers(bpe_tokenizer_path, prose_texts):
    tok = load_tokenizer(bpe_tokenizer_path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    _assert_same_ids(tok, bpe_tokenizer_path, _texts(prose_texts))
    slow = load_tokenizer(bpe_tokenizer_path, fast=False)
    assert slow.backend == "tokenizers"
    for a, b in zip(tok.encode_batch(prose_texts), slow.encode_batch(prose_texts), strict=True):
        assert np.array_equal(a, b)


def test_cl100k_converted_from_tiktoken_matches_both_engines(cl100k_json, prose_texts):
    import tiktoken

    # tiktoken leaves id 100256 unused; tokenizers gives the special tokens the next free ids, not the declared.
    gap = "'<|endoftext|>' is declared as id 100257 in tokenizer.json added_tokens but tokenizers assigns id 100256"
    with pytest.warns(SpecialTokenIdWarning, match=re.escape(gap)):
        tok = load_tokenizer(cl100k_json)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    texts = _texts(prose_texts)
    _assert_same_ids(tok, cl100k_json, texts)
    reference = tiktoken.get_encoding(CL100K_OFFLINE).encode_ordinary_batch(texts)
    assert [a.tolist() for a in tok.encode_batch(texts)] == reference
    # Llama 3's post-processor would prepend BOS; the ids of the text alone never include it.
    assert tok.encode("Hello")[0] != tok.special_tokens["<|endoftext|>"]


def test_gpt2_style_byte_level_regex(gpt2_json, prose_texts, tmp_path):
    tok = load_tokenizer(gpt2_json)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    _assert_same_ids(tok, gpt2_json, _texts(prose_texts))
    prefixed = train_gpt2_style(tmp_path / "prefix" / "tokenizer.json", add_prefix_space=True, vocab_size=600)
    tok = load_tokenizer(prefixed)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    _assert_same_ids(tok, prefixed, _texts(prose_texts[:40]))


def test_unicode_normalizer_is_replicated_qwen2_shape(bpe_tokenizer_path, tmp_path):
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "nfc" / "tokenizer.json",
        lambda d: d.update(normalizer={"type": "NFC"}),
    )
    tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    decomposed = ["Cafe\u0301 re\u0301sume\u0301 na\u0308ive", "A\u030a ring", "\u1e9b\u0323 long s"]
    _assert_same_ids(tok, path, decomposed + stress_texts())
    # NFC really changed something: the composed and decomposed spellings now encode alike.
    assert np.array_equal(tok.encode("Cafe\u0301"), tok.encode("Caf\u00e9"))


def test_ids_remapped_when_merge_order_is_not_id_order(bpe_tokenizer_path, prose_texts, tmp_path):
    """Tekken-like layout: ids of merged tokens shuffled away from merge order; ranks then map back to ids."""

    def shuffle_ids(d):
        vocab = d["model"]["vocab"]
        merged = {a + b for a, b in d["model"]["merges"]}
        movable = sorted((i for t, i in vocab.items() if t in merged), reverse=True)
        order = np.random.default_rng(7).permutation(movable).tolist()
        remap = dict(zip(movable, order, strict=True))
        d["model"]["vocab"] = {t: remap.get(i, i) for t, i in vocab.items()}

    path = edited_copy(bpe_tokenizer_path, tmp_path / "shuffled" / "tokenizer.json", shuffle_ids)
    tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    assert tok._rank_to_id is not None
    _assert_same_ids(tok, path, _texts(prose_texts[:60]))


def test_ids_offset_by_leading_special_tokens(bpe_tokenizer_path, prose_texts, tmp_path):
    """Mistral Tekken shape: a block of special tokens first, every vocabulary id shifted after them."""

    def shift(d):
        # The special tokens are vocabulary entries too, as in Tekken's file: that is what gives them ids 0-19.
        specials = {f"<SPECIAL_{i}>": i for i in range(20)}
        d["model"]["vocab"] = specials | {t: i + 20 for t, i in d["model"]["vocab"].items()}
        d["added_tokens"] = [
            {
                "id": i,
                "content": f"<SPECIAL_{i}>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in range(20)
        ]

    path = edited_copy(bpe_tokenizer_path, tmp_path / "tekken" / "tokenizer.json", shift)
    tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    assert tok._rank_to_id is None  # ids still follow merge order: ranks are ids
    _assert_same_ids(tok, path, _texts(prose_texts[:60]) + ["<SPECIAL_3> stays text"])
    assert 3 not in tok.encode("<SPECIAL_3> stays text").tolist()
    assert tok.token_to_id("<SPECIAL_3>") == 3


# Pre-tokenizer regexes of released byte-level BPE tokenizers (the Split pattern of their tokenizer.json).
_PATTERNS = {
    "llama3": SPLIT_PATTERN,
    "qwen2": (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    ),
    "tekken-o200k": (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}


@pytest.mark.parametrize("shape", sorted(_PATTERNS))
def test_released_tokenizer_regexes(bpe_tokenizer_path, prose_texts, tmp_path, shape):
    """The Split regexes of Llama 3, Qwen 2 and Mistral Tekken / o200k run identically on both regex engines."""
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / shape / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": _PATTERNS[shape]}),
    )
    tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    _assert_same_ids(tok, path, _texts(prose_texts[:60]))


def test_two_splits_in_sequence_are_refused(bpe_tokenizer_path, tmp_path):
    """DeepSeek V3 shape: several Split steps cannot be one tiktoken regex."""

    def two_splits(d):
        steps = d["pre_tokenizer"]["pretokenizers"]
        digits = {
            "type": "Split",
            "pattern": {"Regex": r"\p{N}{1,3}"},
            "behavior": "Isolated",
            "invert": False,
        }
        d["pre_tokenizer"]["pretokenizers"] = [digits, *steps]

    path = edited_copy(bpe_tokenizer_path, tmp_path / "two" / "tokenizer.json", two_splits)
    tok = load_tokenizer(path)
    assert tok.backend == "tokenizers"
    assert "pre-tokenizer ['Split', 'Split', 'ByteLevel']" in tok.fast_path_reason


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer"),
        (lambda d: d["model"].update(dropout=0.1), "dropout"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="MergedWithPrevious"), "Isolated"),
        (
            lambda d: d["added_tokens"].append(
                {
                    "id": 4000,
                    "content": "<tool>",
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": True,
                    "normalized": False,
                    "special": False,
                }
            ),
            "lstrip/rstrip/single_word",
        ),
    ],
    ids=["normalizer", "dropout", "byte_fallback", "split-behavior", "rstrip-added-token"],
)
def test_structural_refusal_keeps_tokenizers_engine(bpe_tokenizer_path, tmp_path, edit, reason):
    path = edited_copy(bpe_tokenizer_path, tmp_path / "refused" / "tokenizer.json", edit)
    tok = load_tokenizer(path)
    assert tok.backend == "tokenizers"
    assert reason in tok.fast_path_reason
    if "dropout" not in reason:  # dropout is random by design: nothing to compare
        _assert_same_ids(tok, path, stress_texts()[:30])


@pytest.mark.parametrize("normalizer", [None, {"type": "NFC"}], ids=["raw", "nfc"])
def test_non_special_added_tokens_are_cut_out_like_tokenizers(
    bpe_tokenizer_path, tmp_path, prose_texts, normalizer
):
    """Qwen 2.5 shape: non-special added tokens (tool-call markup, whitespace runs) matched before the BPE,
    leftmost-longest, with special tokens taking part in the matching but staying text."""
    from tokenizers import AddedToken, Tokenizer

    hf = Tokenizer.from_file(str(bpe_tokenizer_path))
    hf.normalizer = None
    if normalizer:
        from tokenizers import normalizers

        hf.normalizer = normalizers.NFC()
    hf.add_tokens(
        [
            AddedToken("<tool_call>", special=False, normalized=False),
            AddedToken("</tool_call>", special=False, normalized=False),
            AddedToken("tool", special=False, normalized=False),
            AddedToken("endoftext", special=False, normalized=False),
            AddedToken("    ", special=False, normalized=False),
            AddedToken("caf\u00e9", special=False, normalized=True),
        ]
    )
    path = tmp_path / "added" / "tokenizer.json"
    path.parent.mkdir()
    hf.save(str(path))
    tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    texts = [
        '<tool_call>{"name": "f"}</tool_call>',
        "a tool inside <tool_call>tool</tool_call>tool",
        "special <|endoftext|> keeps endoftext inside it as text, endoftext alone is cut",
        "indented\n        code\n            more",
        "cafe\u0301 and caf\u00e9 and CAF\u00c9",
        "<tool_call><tool_call></tool_call>    ",
        "",
        *prose_texts[:40],
    ]
    _assert_same_ids(tok, path, texts + stress_texts())
    tool_id = hf.token_to_id("tool")
    assert tool_id in tok.encode("a tool").tolist()
    assert hf.token_to_id("endoftext") not in tok.encode("<|endoftext|>").tolist()


def test_stress_set_catches_a_regex_that_drops_text(bpe_tokenizer_path, tmp_path):
    """A Split regex that leaves gaps: tokenizers keeps them, tiktoken would drop them. The stress set sees it."""
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "gaps" / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": r"\p{L}+|\p{N}+"}),
    )
    with pytest.warns(FastPathWarning, match="stress set text #0: 'Hello world'"):
        tok = load_tokenizer(path)
    assert tok.backend == "tokenizers"
    _assert_same_ids(tok, path, ["Hello world", "a, b; c"])


def test_verify_sample_falls_back_on_first_differing_text(bpe_tokenizer_path, tmp_path):
    """A difference only real input shows (a character absent from the stress set) falls back on verification."""
    pattern = SPLIT_PATTERN.replace(r"[^\r\n\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}☃]").replace(
        r"[^\s\p{L}\p{N}]", r"[^\s\p{L}\p{N}☃]"
    )
    assert pattern != SPLIT_PATTERN
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "snowman" / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": pattern}),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = load_tokenizer(path)
    assert tok.backend == "tiktoken", tok.fast_path_reason
    sample = ["plain text agrees", "so does this", "a ☃ snowman is dropped by the regex", "never reached ☃"]
    with pytest.warns(FastPathWarning, match=r"sample text #2: 'a ☃ snowman"):
        assert tok.verify_sample(sample) is False
    assert tok.backend == "tokenizers"
    _assert_same_ids(tok, path, sample)
    # And through load_tokenizer(verify_sample=...): the same texts, the same verdict.
    with pytest.warns(FastPathWarning, match="snowman"):
        again = load_tokenizer(path, verify_sample=sample)
    assert again.backend == "tokenizers"
    assert load_tokenizer(path, verify_sample=sample[:2]).backend == "tiktoken"


def test_verify_chars_proves_the_first_input_as_it_is_encoded(bpe_tokenizer_path, tmp_path):
    pattern = SPLIT_PATTERN.replace(r"[^\r\n\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}☃]").replace(
        r"[^\s\p{L}\p{N}]", r"[^\s\p{L}\p{N}☃]"
    )
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "snowman" / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": pattern}),
    )
    reference = hf_reference(path)
    # The difference sits inside the verified prefix: this very batch comes from tokenizers, exact.
    tok = load_tokenizer(path, verify_chars=100)
    batch = ["fine", "a ☃ here", "more text " * 50]
    with pytest.warns(FastPathWarning, match=r"first input text #1: 'a ☃ here'"):
        got = tok.encode_batch(batch)
    assert [a.tolist() for a in got] == hf_ids(reference, batch)
    assert tok.backend == "tokenizers"
    # Beyond the budget nothing more is checked (the budget is spent, the fast path stays).
    tok = load_tokenizer(path, verify_chars=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode_batch(["plain words only here", "x"])
        tok.encode_batch(["a ☃ later"])
    assert tok.backend == "tiktoken" and tok.verify_chars == 0


@pytest.mark.parametrize("fast", [True, False], ids=["tiktoken", "tokenizers"])
def test_special_token_strings_are_plain_text(chat_tokenizer_dir, fast):
    tok = load_tokenizer(chat_tokenizer_dir, eos_token="</s>", bos_token="<s>", fast=fast)
    assert tok.backend == ("tiktoken" if fast else "tokenizers")
    text = "end of one</s><s>start of another <|endoftext|> and <pad>"
    ids = tok.encode(text)
    assert not set(ids.tolist()) & set(tok.special_tokens.values())
    assert tok.decode(ids) == text
    # Only when asked (rendered chat prompts) do the strings become the special tokens.
    special = tok.encode(text, allow_special=True).tolist()
    assert tok.eos_id in special and tok.bos_id in special


def test_special_token_strings_plain_text_for_tiktoken_encoding():
    tok = load_tokenizer(CL100K_OFFLINE, eos_token="<|endoftext|>")
    ids = tok.encode("a<|endoftext|>b<|fim_prefix|>").tolist()
    assert tok.eos_id == 100257 and tok.eos_id not in ids
    assert tok.decode(ids) == "a<|endoftext|>b<|fim_prefix|>"
    assert tok.encode("a<|endoftext|>", allow_special=True).tolist()[-1] == 100257


def test_truncation_and_padding_in_the_file_never_cut_ids(bpe_tokenizer_path, tmp_path):
    def truncate(d):
        d["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
        d["padding"] = {
            "strategy": {"Fixed": 16},
            "direction": "Right",
            "pad_to_multiple_of": None,
            "pad_id": 3,
            "pad_type_id": 0,
            "pad_token": "<pad>",
        }

    path = edited_copy(bpe_tokenizer_path, tmp_path / "trunc" / "tokenizer.json", truncate)
    text = "a sentence long enough to need more than eight tokens, and then some more words"
    full = load_tokenizer(bpe_tokenizer_path, fast=False).encode(text).tolist()
    assert len(full) > 16
    for fast in (True, False):
        tok = load_tokenizer(path, fast=fast)
        assert tok.encode(text).tolist() == full
        assert tok.encode(text, allow_special=True).tolist() == full


def test_round_trip_counts_and_threads(bpe_tokenizer_path, prose_texts):
    tok = load_tokenizer(bpe_tokenizer_path)
    texts = _texts(prose_texts)
    ids = tok.encode_batch(texts)
    assert [tok.decode(a) for a in ids] == texts
    assert tok.count_batch(texts).tolist() == [len(a) for a in ids]
    single = load_tokenizer(bpe_tokenizer_path, num_threads=1).encode_batch(texts)
    assert all(np.array_equal(a, b) for a, b in zip(ids, single, strict=True))
    assert tok.encode_batch([]) == []
    assert tok.encode("").size == 0 and tok.encode("").dtype == np.uint32
    with pytest.raises(TypeError):
        tok.encode_batch("not a list")


def test_fast_path_survives_pickling(bpe_tokenizer_path, tmp_path, prose_texts):
    import pickle

    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    back = pickle.loads(pickle.dumps(tok))
    assert (back.backend, back.eos_id, back.fingerprint) == (tok.backend, tok.eos_id, tok.fingerprint)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(back.encode_batch(prose_texts), tok.encode_batch(prose_texts), strict=True)
    )
    tt = pickle.loads(pickle.dumps(load_tokenizer(CL100K_OFFLINE)))
    assert tt.backend == "tiktoken" and tt.encode("hello world").tolist() == [15339, 1917]


@pytest.mark.parametrize("fast", [True, False], ids=["tiktoken", "tokenizers"])
def test_lone_surrogates_and_non_strings(bpe_tokenizer_path, fast):
    tok = load_tokenizer(bpe_tokenizer_path, fast=fast)
    ids = tok.encode_batch(["fine", "half an emoji \ud83d here"])
    assert tok.decode(ids[1]) == "half an emoji \ufffd here"
    assert np.array_equal(ids[1], tok.encode("half an emoji \ufffd here"))
    with pytest.raises(TypeError, match="text #1 of the batch is NoneType"):
        tok.encode_batch(["fine", None])


def test_encoding_in_a_forked_child_after_the_parent_used_its_threads(bpe_tokenizer_path, prose_texts):
    """datatrove's local executor forks workers; a thread pool inherited that way must not be reused."""
    import multiprocessing

    tok = load_tokenizer(bpe_tokenizer_path, num_threads=2)
    expected = [a.tolist() for a in tok.encode_batch(prose_texts[:50])]  # the parent's pool now exists
    _INHERITED["tok"] = tok
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_encode_inherited, (prose_texts[:50],)).get(timeout=60)
    finally:
        _INHERITED.clear()
    assert got == expected


_INHERITED: dict = {}


def _encode_inherited(texts):
    return [a.tolist() for a in _INHERITED["tok"].encode_batch(texts)]
