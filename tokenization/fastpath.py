"""The fast path: run a byte-level BPE tokenizer.json on tiktoken's native, multi-threaded encoder.

A tokenizer.json qualifies when tiktoken can reproduce it exactly:

- the model is a BPE over the byte-level alphabet (GPT-2's `bytes_to_unicode`), every one of the 256 bytes is
  in the vocabulary, no dropout, no byte fallback, no sub-word prefix/suffix;
- the merges are in the order of the ids they produce (tiktoken merges by the rank of the merged token), or
  else the ids are remapped from merge order after encoding;
- the pre-tokenizer is one regex `Split` (behavior Isolated) followed by `ByteLevel(use_regex=False)` (Llama 3,
  Qwen 2, Mistral Tekken, cl100k-style), or a lone `ByteLevel(use_regex=True)` (GPT-2's regex);
- the normalizer is absent or only Unicode normalization forms (Qwen 2 uses NFC), applied in Python first;
- non-special added tokens (Qwen 2.5's tool-call markup, whitespace runs) have no lstrip/rstrip/single_word:
  they are cut out of the text in Python exactly as tokenizers does (see `tokenization.textprep`); special ones are
  plain text here, by policy.

Structural checks cannot catch everything (the two regex engines; tie-breaking between merges that make the
same token; a vocabulary entry that the merges would not reach from its own bytes, which tiktoken emits whole
and `tokenizers` does not when ignore_merges is off), so every conversion is then proved on a fixed stress set, and `Tokenizer.verify_sample` proves it on real input: the
first text whose ids differ from `tokenizers`' sends the tokenizer back to `tokenizers` with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from tokenization.fingerprint import normalize_merges
from tokenization.textprep import AddedSpec, TextPreparer
from tokenization.tokenizer import Tokenizer, ordinary_encoding, proof_failure

# The regex of GPT-2, which a ByteLevel pre-tokenizer with use_regex=True applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_UNICODE_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}


class FastPathRefused(Exception):
    """The tokenizer.json has something tiktoken cannot run exactly; the message says what."""


@lru_cache(maxsize=1)
def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable character -> the byte it stands for."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@lru_cache(maxsize=1)
def _byte_level_translation() -> dict[int, int]:
    """str.translate table: alphabet character -> the character of its byte (U+0000..U+00FF), and every other
    character below U+0144 -> U+0100, which latin-1 cannot encode, so non-alphabet tokens fail loudly."""
    table = {cp: 0x100 for cp in range(0x144)}
    table.update({ord(ch): b for ch, b in byte_level_decoder().items()})
    return table


def _token_bytes(token: str, table: Mapping[int, int]) -> bytes | None:
    try:
        return token.translate(table).encode("latin-1")
    except UnicodeEncodeError:
        return None


def _pattern_and_prefix(pre: Mapping[str, Any] | None) -> tuple[str, bool]:
    """The tiktoken pat_str equivalent to a pre-tokenizer, and whether to prepend a space to each text."""
    if pre is None:
        raise FastPathRefused("no pre-tokenizer (a byte-level BPE needs ByteLevel)")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"]:
        step = steps[0]
        if not step.get("use_regex", True):
            raise FastPathRefused("ByteLevel(use_regex=False) without a Split: no pre-tokenization regex")
        return GPT2_PATTERN, bool(step.get("add_prefix_space", False))
    if kinds == ["Split", "ByteLevel"]:
        split, byte_level = steps
        if byte_level.get("use_regex", True):
            raise FastPathRefused("Split followed by ByteLevel(use_regex=True): two regexes in sequence")
        if byte_level.get("add_prefix_space", False):
            raise FastPathRefused("ByteLevel(add_prefix_space=True) after a Split prefixes every piece")
        if split.get("behavior") != "Isolated" or split.get("invert", False):
            raise FastPathRefused(
                f"Split behavior {split.get('behavior')!r} invert={split.get('invert')}: only Isolated is tiktoken's"
            )
        pattern = split.get("pattern") or {}
        if "Regex" not in pattern:
            raise FastPathRefused(f"Split on a literal string {pattern!r}, not a regex")
        return pattern["Regex"], False
    raise FastPathRefused(f"pre-tokenizer {kinds} is not Split(regex)+ByteLevel or ByteLevel(use_regex=True)")


def _normalizer_forms(normalizer: Mapping[str, Any] | None) -> list[str]:
    if normalizer is None:
        return []
    steps = normalizer["normalizers"] if normalizer.get("type") == "Sequence" else [normalizer]
    forms = [s.get("type") for s in steps]
    if not set(forms) <= _UNICODE_FORMS:
        raise FastPathRefused(
            f"normalizer {forms} changes text in ways tiktoken does not (only NFC/NFD/NFKC/NFKD)"
        )
    return forms


def convert(data: Mapping[str, Any], added_tokens: Mapping[int, Any]) -> dict[str, Any]:
    """tiktoken parameters equivalent to a parsed tokenizer.json, or FastPathRefused saying why not.

    Returns {pat_str, mergeable_ranks, rank_to_id (None when ranks are ids), preparer_spec (TextPreparer's)}.
    """
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "merges" not in model:
        raise FastPathRefused(f"model type {model.get('type')!r} is not BPE")
    if model.get("dropout") not in (None, 0, 0.0):
        raise FastPathRefused(f"BPE dropout={model['dropout']} is random")
    if model.get("byte_fallback"):
        raise FastPathRefused("byte_fallback=True (a SentencePiece-style BPE, not byte-level)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise FastPathRefused(f"{key}={model[key]!r}")
    pat_str, prefix_space = _pattern_and_prefix(data.get("pre_tokenizer"))
    non_special = [t for t in added_tokens.values() if not t.special]
    flagged = sorted(t.content for t in non_special if t.lstrip or t.rstrip or t.single_word)
    if flagged:
        raise FastPathRefused(f"non-special added tokens with lstrip/rstrip/single_word: {flagged[:5]}")
    if non_special and prefix_space:
        raise FastPathRefused(
            "non-special added tokens with ByteLevel(add_prefix_space=True) prefix every piece"
        )
    forms = _normalizer_forms(data.get("normalizer"))

    table = _byte_level_translation()
    vocab: Mapping[str, int] = model["vocab"]
    id_bytes: dict[int, bytes] = {}
    for token, token_id in vocab.items():
        raw = _token_bytes(token, table)
        if raw is not None:
            id_bytes[int(token_id)] = raw
    single = {raw[0]: i for i, raw in id_bytes.items() if len(raw) == 1}
    if len(single) != 256:
        missing = sorted(set(range(256)) - set(single))
        raise FastPathRefused(
            f"{len(missing)} of the 256 bytes are not in the vocabulary (first: {missing[:5]})"
        )

    merges = normalize_merges(model["merges"])
    made = [vocab.get(left + right, -1) for left, right in merges]
    merged_ids = np.array(made, dtype=np.int64)
    known = np.zeros(max(max(map(int, vocab.values())), max(id_bytes)) + 2, dtype=bool)
    known[list(id_bytes)] = True
    bad = np.flatnonzero(~known[merged_ids])  # -1 (not in vocab) lands on the last, always-False slot
    if bad.size:
        i = int(bad[0])
        left, right = merges[i]
        raise FastPathRefused(
            f"merge {i} ({left!r} {right!r}) makes {left + right!r}, not a byte-level vocab entry"
        )
    # Rank of each merged token = position of its first merge; tokens must not interleave across merges.
    order, first = np.unique(merged_ids, return_index=True)
    by_rank = order[np.argsort(first, kind="stable")]
    if len(merged_ids) and np.count_nonzero(np.diff(merged_ids)) + 1 != len(by_rank):
        raise FastPathRefused("merges that make the same token are not contiguous: no single rank per token")
    merged_set = set(by_rank.tolist())
    orphans = [i for i, raw in id_bytes.items() if len(raw) > 1 and i not in merged_set]
    special_ids = {i for i, t in added_tokens.items() if t.special}
    if model.get("ignore_merges") and any(i not in special_ids for i in orphans):
        example = next(id_bytes[i] for i in orphans if i not in special_ids)
        raise FastPathRefused(
            f"ignore_merges=True and vocabulary entries no merge produces (e.g. {example!r})"
        )

    ids_in_rank_order = np.concatenate([np.array(sorted(single.values()), dtype=np.int64), by_rank])
    if np.all(np.diff(by_rank) > 0):
        # Merge order is id order: ranks are the ids themselves (bytes' ranks are never compared).
        ranks = {id_bytes[i]: i for i in ids_in_rank_order.tolist()}
        rank_to_id = None
    else:
        ranks = {id_bytes[i]: r for r, i in enumerate(ids_in_rank_order.tolist())}
        rank_to_id = ids_in_rank_order.astype(np.uint32)
    if len(ranks) != len(ids_in_rank_order):
        raise FastPathRefused("two vocabulary entries have the same bytes")
    return {
        "pat_str": pat_str,
        "mergeable_ranks": ranks,
        "rank_to_id": rank_to_id,
        "preparer_spec": {
            "forms": list(forms),
            "prefix_space": prefix_space,
            "added": [[int(i), AddedSpec.of(t).as_dict()] for i, t in sorted(added_tokens.items())],
        },
    }


def stress_texts() -> list[str]:
    """A fixed set of texts where byte-level BPE engines are known to disagree if they are not equivalent."""
    texts = [
        "Hello world",
        " leading space",
        "  two leading",
        "trailing space ",
        "trailing spaces   ",
        "12345678901234567890",
        "3.14159 2,718 1e-10 0x1F -42 +7 ٣٤٥ ½ ²³ ⅷ",
        "a1b22c333d4444",
        "tab\tseparated\tvalues\t",
        "line\nbreaks\n\nand\r\nwindows\r\n\r\n",
        "\n\n\n",
        "   \n   \n",
        "x\u00a0y\u2009z\u3000w",
        "\u200b\u200c\u200d\ufeff",
        " \t \n \x0b \x0c \r ",
        "\x00\x01\x1f\x7f",
        "don't won't it's I'm you're we've they'll he'd",
        "DON'T WON'T IT'S I'M",
        "O'Neil's rock'n'roll",
        "naïve café résumé Zürich Ærøskøbing",
        "Ünïcödé ÀÉÎÕÜ",
        "e\u0301 a\u0308 n\u0303 (combining marks)",
        "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
        "ﬁ ﬂ ﬀ ligatures",
        "Straße İstanbul ǅ ǈ",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "Γειά σου Κόσμε",
        "שלום עולם",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "你好，世界！这是一个测试。",
        "日本語のテキスト、カタカナ、ひらがな。",
        "한국어 텍스트입니다",
        "😀😃😄 👨‍👩‍👧‍👦 🇺🇸🇩🇪 👍🏽 ❤️",
        "emoji🙂inside🙂words",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 𐍈",
        "def f(x):\n    return x ** 2  # square\n\n\tif x: pass\n",
        "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        '<html><body class="x">&amp;&lt;</body></html>',
        '{"key": [1, 2.5, null, true], "k2": "v"}',
        "SELECT * FROM t WHERE a >= 10 AND b <> 'x';",
        "$ ls -la | grep '^d' && echo \"done\" > /dev/null",
        "https://example.com/path?q=1&r=two#frag user@example.org",
        "C:\\Users\\name\\file.txt",
        "!!!???...,,,;;;:::---___===+++***",
        "((()))[[[]]]{{{}}}<<<>>>",
        "a" * 300,
        "ab" * 200,
        "Pneumonoultramicroscopicsilicovolcanoconiosis" * 8,
        "9" * 257,
        " " * 100 + "x",
        "x" + " " * 100,
        "\n" * 50 + "end",
        "word " * 50,
        "-" * 120,
        "=" * 80 + "\n",
        "·" * 40,
        "中" * 100,
        "<|endoftext|>",
        "text<|endoftext|>more",
        "</s><s>[INST] hi [/INST]",
        "<pad><unk><|im_start|>user",
        "<|begin_of_text|><|start_header_id|>",
        "[CLS] [SEP] [MASK]",
        "‘curly’ “quotes” — dashes – …",
        "\u202eRTL override\u202c",
        "mixedCASEwordsAndCamelCase snake_case_words kebab-case-words",
        "'s 's 'S 'T 'Re 'VE 'm 'LL 'd",
        "  's",
        "x's'y",
        "1,234,567.89 $12.50 €99 ¥1000 £5",
        "2024-01-31T12:34:56Z 12:00 PM 31/12/1999",
        "e=mc² ∑∫∂√∞ ≤≥≠≈ α β γ δ",
        "⟨⟩ ⌘ ⌥ ⇧ ␣ ⏎",
    ]
    # Every ASCII character, alone and in context, and one of each Unicode category's common members.
    texts += ["".join(chr(c) for c in range(32, 127)), "".join(chr(c) + " " for c in range(0, 128))]
    texts.append("".join(chr(c) for c in range(0xA0, 0x250)))
    return texts


def fast_encoding(pat_str: str, mergeable_ranks: dict[bytes, int]) -> Any:
    """The tiktoken.Encoding of a conversion (built here, or again from the disk cache's ranks)."""
    return ordinary_encoding("longtrove-fast-path", pat_str, mergeable_ranks)


def build_fast_encoding(
    data: Mapping[str, Any], added_tokens: Mapping[int, Any]
) -> tuple[Any, dict[str, Any], str | None]:
    """(tiktoken.Encoding, conversion params, None), or (None, {}, reason) when tiktoken cannot run it."""
    try:
        params = convert(data, added_tokens)
        encoding = fast_encoding(params["pat_str"], params["mergeable_ranks"])
    except FastPathRefused as exc:
        return None, {}, str(exc)
    except ValueError as exc:  # tiktoken's regex engine rejected the pattern
        return None, {}, f"tiktoken cannot compile the pre-tokenizer regex ({exc})"
    params.pop("mergeable_ranks")  # the encoding keeps them (as `_mergeable_ranks`)
    params["preparer"] = TextPreparer.from_spec(params["preparer_spec"])
    return encoding, params, None


def stress_failure(hf: Any, raw: str, encoding: Any, params: Mapping[str, Any]) -> str | None:
    """None when the converted encoding gives `hf`'s ids on the whole stress set, else why not (the text)."""
    probe = Tokenizer(name="stress", fingerprint="", hf=hf, hf_json=raw, num_threads=1)
    probe.use_fast_path(encoding, rank_to_id=params["rank_to_id"], preparer=params["preparer"])
    return proof_failure(probe, stress_texts(), what="stress set")
