"""Chat templates rendered the way `transformers` renders them, without depending on transformers.

The template comes from `tokenizer_config.json` (a string, or a list of named templates) or from a
`chat_template.jinja` file beside it, as hub folders ship them. It runs in jinja2's immutable sandbox with
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that keeps non-ASCII text,
and the globals `raise_exception` and `strftime_now`; the special-token strings of the config (`bos_token`,
`eos_token`, ...) are template variables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenization.errors import TokenizerError

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_string(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with `content`."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def read_tokenizer_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json beside a tokenizer.json (empty if there is none), plus chat_template.jinja."""
    config: dict[str, Any] = {}
    path = folder / "tokenizer_config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{path}: not valid JSON ({exc}); fix or remove the file") from exc
        if not isinstance(config, dict):
            raise TokenizerError(f"{path}: expected a JSON object at the top level")
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file() and not config.get("chat_template"):
        config["chat_template"] = jinja_file.read_text(encoding="utf-8")
    return config


def special_token_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """The special-token variables a chat template sees (`bos_token`, `eos_token`, ...)."""
    out: dict[str, str] = {}
    for key in _SPECIAL_KEYS:
        token = _token_string(config.get(key))
        if token is not None:
            out[key] = token
    return out


def select_chat_template(
    value: Any, name: str | None = None, *, source: str = "tokenizer_config.json"
) -> str | None:
    """The template text: a plain string, or the entry called `name` (default "default") of a named list."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        templates = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        wanted = name or "default"
        if wanted in templates and isinstance(templates[wanted], str):
            return templates[wanted]
        if name is None and len(templates) == 1:
            return next(iter(templates.values()))
        raise TokenizerError(
            f"{source}: chat_template has no template named {wanted!r} (found: {sorted(map(str, templates))})"
        )
    raise TokenizerError(f"{source}: chat_template must be a string or a list of {{name, template}} objects")


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> Any:
    """Compile once per template text; compiling is far slower than rendering."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` (a list of {role, content}) with the template, as transformers does."""
    compiled = compile_chat_template(template)
    variables = dict(special_tokens or {})
    variables.update(kwargs)
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt, **variables)
