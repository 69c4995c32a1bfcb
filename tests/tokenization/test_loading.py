"""Specs (paths, folders, hub cache, tiktoken names), special-token configuration, fingerprints, bad input."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CL100K_OFFLINE
from tests.tokenization.conftest import edited_copy
from tokenization import SpecialTokenIdWarning, TokenizerError, load_tokenizer, smallest_dtype


def test_path_folder_and_fields(bpe_tokenizer_path):
    by_file = load_tokenizer(bpe_tokenizer_path)
    by_folder = load_tokenizer(bpe_tokenizer_path.parent)
    assert by_file.fingerprint == by_folder.fingerprint
    assert by_file.name == by_folder.name == bpe_tokenizer_path.parent.name
    assert by_file.vocab_size == 4000
    assert len(by_file.fingerprint) == 64 and int(by_file.fingerprint, 16) >= 0
    # Nothing implied: no separator unless configured.
    assert (by_file.eos_id, by_file.bos_id, by_file.pad_id) == (None, None, None)
    assert by_file.special_tokens == {"<|endoftext|>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}


def test_explicit_special_tokens(bpe_tokenizer_path):
    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>", bos_token="<s>", pad_token="<pad>")
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (2, 1, 3)
    with pytest.raises(TokenizerError, match=r"eos_token='<\|im_end\|>' is not a token of"):
        load_tokenizer(bpe_tokenizer_path, eos_token="<|im_end|>")


def test_tiktoken_encoding_name():
    tok = load_tokenizer(CL100K_OFFLINE, eos_token="<|endoftext|>")
    assert tok.backend == "tiktoken" and tok.name == CL100K_OFFLINE
    assert tok.eos_id == 100257 and tok.bos_id is None
    assert tok.special_tokens["<|endofprompt|>"] == 100276
    assert tok.vocab_size == 100277
    assert tok.encode_batch(["hello world", "!"])[0].tolist() == [15339, 1917]
    assert tok.fingerprint == load_tokenizer(CL100K_OFFLINE).fingerprint
    assert tok.chat_template is None
    with pytest.raises(TokenizerError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_fingerprint_ignores_formatting_but_not_content(bpe_tokenizer_path, tmp_path):
    base = load_tokenizer(bpe_tokenizer_path).fingerprint
    data = json.loads(bpe_tokenizer_path.read_text())

    # Same ids, other bytes: indentation, key order, merges spelled "a b", a different decoder.
    legacy = dict(reversed(list(data.items())))
    legacy["model"] = dict(data["model"], merges=[f"{a} {b}" for a, b in data["model"]["merges"]])
    legacy["decoder"] = None
    legacy_path = tmp_path / "legacy" / "tokenizer.json"
    legacy_path.parent.mkdir()
    legacy_path.write_text(json.dumps(legacy, indent=4, sort_keys=True))
    same = load_tokenizer(legacy_path)
    assert same.fingerprint == base
    assert (
        same.encode("merges spelled differently").tolist()
        == load_tokenizer(bpe_tokenizer_path).encode("merges spelled differently").tolist()
    )

    def swap_two_merges(d):
        m = d["model"]["merges"]
        m[10], m[11] = m[11], m[10]

    changes = {
        "merge order": swap_two_merges,
        "normalizer": lambda d: d.update(normalizer={"type": "NFC"}),
        "pre-tokenizer": lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True),
        "special token": lambda d: d["added_tokens"][2].update(content="</S>"),
        "vocabulary": lambda d: d["model"]["vocab"].update({"zzzzqqq": 4000}),
    }
    prints = {base}
    for what, edit in changes.items():
        # A renamed special token is no longer a vocabulary entry: tokenizers gives it a new id, not its declared 2.
        renamed = pytest.warns(SpecialTokenIdWarning, match="'</S>' is declared as id 2")
        with renamed if what == "special token" else contextlib.nullcontext():
            fp = load_tokenizer(
                edited_copy(bpe_tokenizer_path, tmp_path / what / "tokenizer.json", edit), fast=False
            )
        assert fp.fingerprint not in prints, what
        prints.add(fp.fingerprint)


def test_hub_id_from_offline_cache(bpe_tokenizer_path, chat_tokenizer_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-bpe"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copy(chat_tokenizer_dir / "tokenizer.json", snapshot / "tokenizer.json")
    shutil.copy(chat_tokenizer_dir / "tokenizer_config.json", snapshot / "tokenizer_config.json")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    tok = load_tokenizer("acme/tiny-bpe", eos_token="</s>")
    assert tok.name == "acme/tiny-bpe"
    assert tok.fingerprint == load_tokenizer(bpe_tokenizer_path).fingerprint
    assert tok.chat_template is not None and tok.eos_id == 2
    with pytest.raises(TokenizerError, match=r"acme/missing.*offline.*huggingface-cli download acme/missing"):
        load_tokenizer("acme/missing")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nope" / "tokenizer.json", r"no such file or folder"),
        (lambda tmp: tmp, r"folder holds no tokenizer.json"),
        (
            lambda tmp: _write(tmp / "a.json", "{not json"),
            r"a.json: not a tokenizer.json \(invalid JSON at line 1",
        ),
        (lambda tmp: _write(tmp / "b.json", '{"vocab": {}}'), r"b.json: not a tokenizer.json \(no 'model'"),
        (
            lambda tmp: _write_bytes(tmp / "c.json", b"\xff\xfe\x00binary"),
            r"c.json: not a tokenizer.json \(not UTF-8",
        ),
        (
            lambda tmp: _write(tmp / "d.json", '{"model": {"type": "Nonsense"}}'),
            r"d.json: the tokenizers library cannot load it",
        ),
    ],
    ids=["missing-path", "empty-folder", "bad-json", "no-model", "binary", "bad-model"],
)
def test_bad_specs_name_the_path(tmp_path, make, message):
    spec = make(tmp_path)
    with pytest.raises(TokenizerError, match=message) as err:
        load_tokenizer(spec)
    assert str(spec) in str(err.value) or Path(spec).name in str(err.value)


def test_unknown_names():
    with pytest.raises(TokenizerError, match="not a tiktoken encoding name"):
        load_tokenizer("./does-not-exist.json")
    with pytest.raises(TokenizerError, match="empty tokenizer spec"):
        load_tokenizer("")


def test_bad_chat_template_config(bpe_tokenizer_path, tmp_path):
    folder = tmp_path / "badcfg"
    folder.mkdir()
    shutil.copy(bpe_tokenizer_path, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: not valid JSON"):
        load_tokenizer(folder)


def test_smallest_dtype():
    assert smallest_dtype(4000) == np.uint16
    assert smallest_dtype(65536) == np.uint16
    assert smallest_dtype(65537) == np.uint32
    assert smallest_dtype(131072) == np.uint32
    with pytest.raises(ValueError, match="does not fit uint32"):
        smallest_dtype(2**32 + 1)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
