"""Chat templates: read from tokenizer_config.json, rendered as transformers renders them."""

from __future__ import annotations

import json
import shutil

import pytest
from jinja2.exceptions import SecurityError, TemplateError

from tokenization import TokenizerError, load_tokenizer

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Où est la gare?"}]


def test_fixture_template_renders_and_encodes(chat_tokenizer_dir):
    tok = load_tokenizer(chat_tokenizer_dir, eos_token="</s>", bos_token="<s>")
    prompt = tok.apply_chat_template(MESSAGES)
    assert prompt == "<s>system\nBe brief.</s>\n<s>user\nOù est la gare?</s>\n<s>assistant\n"
    assert not tok.apply_chat_template(MESSAGES, add_generation_prompt=False).endswith("assistant\n")
    # A rendered prompt is encoded with its markup as special tokens only when asked.
    ids = tok.encode(prompt, allow_special=True).tolist()
    assert ids.count(tok.bos_id) == 3 and ids.count(tok.eos_id) == 2
    assert tok.bos_id not in tok.encode(prompt).tolist()


def _folder_with(tmp_path, bpe_tokenizer_path, config, jinja=None):
    folder = tmp_path / "tok"
    folder.mkdir(parents=True)
    shutil.copy(bpe_tokenizer_path, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja)
    return folder


def test_transformers_conventions(bpe_tokenizer_path, tmp_path):
    # trim_blocks/lstrip_blocks, bos_token/eos_token variables (AddedToken-dict spelling too), tojson keeping
    # non-ASCII text, loop controls, raise_exception.
    template = (
        "{{ bos_token }}\n"
        "    {% for m in messages %}\n"
        "    {% if m['role'] == 'system' %}{% continue %}{% endif %}\n"
        "[{{ m['role'] }}] {{ m['content'] | tojson }}{{ eos_token }}\n"
        "    {% endfor %}\n"
        "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('last message must be the user') }}{% endif %}"
    )
    config = {
        "chat_template": template,
        "bos_token": {"content": "<s>", "special": True},
        "eos_token": "</s>",
    }
    tok = load_tokenizer(_folder_with(tmp_path, bpe_tokenizer_path, config))
    assert tok.apply_chat_template(MESSAGES) == '<s>\n[user] "Où est la gare?"</s>\n'
    with pytest.raises(TemplateError, match="last message must be the user"):
        tok.apply_chat_template([{"role": "assistant", "content": "x"}])


def test_named_templates_and_jinja_file(bpe_tokenizer_path, tmp_path):
    config = {
        "chat_template": [
            {"name": "default", "template": "D:{{ messages[0]['content'] }}"},
            {"name": "tool_use", "template": "T:{{ messages[0]['content'] }}"},
        ]
    }
    folder = _folder_with(tmp_path, bpe_tokenizer_path, config)
    assert load_tokenizer(folder).apply_chat_template(MESSAGES) == "D:Be brief."
    assert (
        load_tokenizer(folder, chat_template_name="tool_use").apply_chat_template(MESSAGES) == "T:Be brief."
    )
    with pytest.raises(TokenizerError, match="no template named 'rag'"):
        load_tokenizer(folder, chat_template_name="rag")

    other = _folder_with(tmp_path / "j", bpe_tokenizer_path, {}, jinja="J:{{ messages|length }}")
    assert load_tokenizer(other).apply_chat_template(MESSAGES) == "J:2"


def test_template_is_sandboxed(bpe_tokenizer_path, tmp_path):
    config = {"chat_template": "{{ messages.__class__.__mro__[1].__subclasses__() }}"}
    tok = load_tokenizer(_folder_with(tmp_path, bpe_tokenizer_path, config))
    with pytest.raises(SecurityError):
        tok.apply_chat_template(MESSAGES)
