"""The `Tokenizer`: text to uint32 numpy ids, with one engine behind it.

Two engines: Hugging Face `tokenizers` (any tokenizer.json) and `tiktoken` (a tiktoken encoding, or a
tokenizer.json that the fast path has proved tiktoken can run exactly). Whichever runs, `encode_batch` returns
the ids of the text alone: no BOS/EOS, and special-token strings in the text (`<|endoftext|>`, `</s>`) are
encoded as ordinary text so that data can never forge a document boundary. BOS/EOS ids come only from explicit
configuration (`eos_token=`, `bos_token=`) and are added by whoever packs documents.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenization.chat import render_chat_template, select_chat_template, special_token_strings
from tokenization.errors import FastPathWarning, TokenizerError

if TYPE_CHECKING:
    import tiktoken
    import tokenizers

    from tokenization.textprep import TextPreparer


_NO_SPECIAL: frozenset[str] = frozenset()

# tiktoken's `encode` scans for special tokens with a regex; with none registered that regex is empty and
# matches at every position, so engines built here register one token that is never allowed.
SENTINEL_SPECIAL = "<|longtrove-never-allowed|>"


def ordinary_encoding(name: str, pat_str: str, mergeable_ranks: dict[bytes, int]) -> tiktoken.Encoding:
    """A tiktoken encoding for ordinary text: its one special token is `SENTINEL_SPECIAL`, never allowed."""
    import tiktoken

    return tiktoken.Encoding(
        name=name,
        pat_str=pat_str,
        mergeable_ranks=mergeable_ranks,
        special_tokens={SENTINEL_SPECIAL: max(mergeable_ranks.values()) + 1},
    )


def smallest_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id of a vocabulary of `vocab_size` entries."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"a vocabulary of {vocab_size} entries does not fit uint32 ids")


def _default_threads() -> int:
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def lists_to_arrays(lists: Sequence[Sequence[int]], dtype: Any = np.uint32) -> list[np.ndarray]:
    """Convert many id lists to numpy arrays with one native pass over all ids, then zero-copy splits."""
    if not lists:
        return []
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    total = int(lengths.sum())
    from itertools import chain

    flat = np.fromiter(chain.from_iterable(lists), dtype=dtype, count=total)
    return np.split(flat, np.cumsum(lengths[:-1]))


class Tokenizer:
    """A loaded tokenizer. Build it with `tokenization.load_tokenizer(spec)`.

    Attributes: `name`, `backend` ("tiktoken" | "tokenizers"), `fingerprint` (sha256 hex of what decides the
    ids), `vocab_size`, `eos_id` / `bos_id` / `pad_id` (None unless configured), `chat_template`,
    `special_tokens` (string -> id of every special token), `fast_path_reason` (why a tokenizer.json does not
    run on tiktoken, None when it does or when the spec is a tiktoken encoding).
    """

    def __init__(
        self,
        *,
        name: str,
        fingerprint: str,
        hf: tokenizers.Tokenizer | Callable[[], tokenizers.Tokenizer] | None = None,
        hf_json: str | None = None,
        vocab_size: int | None = None,
        tiktoken_encoding: tiktoken.Encoding | None = None,
        tiktoken_with_special: tiktoken.Encoding | None = None,
        special_tokens: Mapping[str, int] | None = None,
        config: Mapping[str, Any] | None = None,
        chat_template_name: str | None = None,
        source: str = "",
        num_threads: int | None = None,
        rebuild: Callable[[str, str, dict[str, Any]], Tokenizer] | None = None,
    ) -> None:
        if hf is None and tiktoken_encoding is None:
            raise ValueError("a Tokenizer needs a tokenizers.Tokenizer or a tiktoken.Encoding")
        self.name = name
        self.fingerprint = fingerprint
        self.source = source
        self.num_threads = num_threads or _default_threads()
        # `hf` must not match special added tokens in text (encode_special_tokens=True); non-special added
        # tokens, ordinary vocabulary that tokenizers splits off first, are still matched. It may be a
        # loader: on the fast path the `tokenizers` engine is only built when something needs it (decode,
        # verification, fallback). A second instance that does match special tokens is built from
        # `hf_json` only if `allow_special=True` is ever asked for.
        self._is_json = hf is not None
        self._hf_obj = None if callable(hf) and not hasattr(hf, "encode_batch") else hf
        self._hf_loader = hf if self._hf_obj is None else None
        self._hf_json = hf_json
        self._vocab_size = vocab_size
        self._hf_special: tokenizers.Tokenizer | None = None
        # The tiktoken engine for ordinary text: either the tiktoken encoding itself or the fast path.
        self._tt = tiktoken_encoding
        # With special tokens, for decode and allow_special (a tiktoken encoding's ordinary twin may have none).
        self._tt_full = tiktoken_encoding if tiktoken_with_special is None else tiktoken_with_special
        self._rank_to_id: np.ndarray | None = None
        self._preparer: TextPreparer | None = None  # normalizer, added tokens, prefix space (fast path)
        self.fast_path_reason: str | None = None
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self._config = dict(config or {})
        self._chat_template_name = chat_template_name
        self.chat_template: str | None = select_chat_template(
            self._config.get("chat_template"), chat_template_name, source=source or name
        )
        self.eos_id: int | None = None
        self.bos_id: int | None = None
        self.pad_id: int | None = None
        self._special_args: dict[str, str | None] = {}
        # Characters of real input still to prove against `tokenizers` as they are encoded (load_tokenizer's
        # verify_chars); 0 once done or when not asked for.
        self.verify_chars = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_size = 0
        # How a pickled copy is rebuilt in another process: the loader's function, given (kind, payload, state).
        self._rebuild = rebuild

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        """Which engine encodes ordinary text: "tiktoken" or "tokenizers"."""
        return "tiktoken" if self._tt is not None else "tokenizers"

    @property
    def fast_path_on(self) -> bool:
        """True when a tokenizer.json runs on the tiktoken engine (the fast path, which verification proves)."""
        return self._tt is not None and self._is_json

    @property
    def _hf(self) -> tokenizers.Tokenizer | None:
        if self._hf_obj is None and self._hf_loader is not None:
            self._hf_obj = self._hf_loader()
        return self._hf_obj

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the largest id + 1 for tiktoken encodings)."""
        if self._vocab_size is not None:
            return self._vocab_size
        if self._is_json:
            assert self._hf is not None
            return int(self._hf.get_vocab_size(with_added_tokens=True))
        assert self._tt_full is not None
        return int(self._tt_full.n_vocab)

    def token_to_id(self, token: str) -> int | None:
        """The id of a whole token string (special or vocabulary entry), or None."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        if self._is_json:
            assert self._hf is not None
            return self._hf.token_to_id(token)
        assert self._tt_full is not None
        try:
            return int(self._tt_full.encode_single_token(token))
        except KeyError:
            return None

    def _resolve(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        token_id = self.token_to_id(token)
        if token_id is None:
            known = ", ".join(sorted(self.special_tokens)[:12])
            raise TokenizerError(
                f"{what}={token!r} is not a token of {self.name} ({self.source}); special tokens are: {known}"
            )
        return token_id

    def configure_special(
        self, *, eos_token: str | None = None, bos_token: str | None = None, pad_token: str | None = None
    ) -> None:
        """Set eos_id/bos_id/pad_id from explicit token strings (an unknown token is an error)."""
        self._special_args = {"eos_token": eos_token, "bos_token": bos_token, "pad_token": pad_token}
        self.eos_id = self._resolve(eos_token, "eos_token")
        self.bos_id = self._resolve(bos_token, "bos_token")
        self.pad_id = self._resolve(pad_token, "pad_token")

    # ------------------------------------------------------------------ encoding
    def _threads(self) -> ThreadPoolExecutor:
        # A pool inherited through fork() has no live threads but may look idle, and would hang: one per pid.
        if self._pool is None or self._pool_pid != os.getpid() or self._pool_size != self.num_threads:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="longtrove-tok")
            self._pool_pid = os.getpid()
            self._pool_size = self.num_threads
        return self._pool

    def _encode_one_tiktoken(self, text: str) -> np.ndarray:
        # The buffer variant releases the GIL for the whole encode and hands the ids over without building a
        # Python int per token. No special token is allowed, so special-token strings are encoded as text.
        assert self._tt is not None
        return np.frombuffer(self._tt._core_bpe.encode_to_tiktoken_buffer(text, _NO_SPECIAL), dtype=np.uint32)

    def _encode_pieces(self, texts: Sequence[str]) -> list[np.ndarray]:
        if len(texts) == 1 or self.num_threads == 1:
            arrays = [self._encode_one_tiktoken(t) for t in texts]
        else:
            arrays = list(self._threads().map(self._encode_one_tiktoken, texts))
        if self._rank_to_id is not None:
            arrays = [self._rank_to_id[a] for a in arrays]
        return arrays

    def _encode_tiktoken(self, texts: Sequence[str]) -> list[np.ndarray]:
        prep = self._preparer
        if prep is None:
            return self._encode_pieces(texts)
        if not prep.has_added:
            return self._encode_pieces([prep.simple(t) for t in texts])
        # Non-special added tokens: encode the pieces between them in one batch, then stitch the ids back.
        layouts = [prep.split(t) for t in texts]
        pieces = [p for layout in layouts for p in layout if isinstance(p, str)]
        encoded = iter(self._encode_pieces(pieces))
        out = []
        for layout in layouts:
            if len(layout) == 1 and isinstance(layout[0], str):
                out.append(next(encoded))
                continue
            parts = [next(encoded) if isinstance(p, str) else np.array([p], dtype=np.uint32) for p in layout]
            out.append(np.concatenate(parts))
        return out

    def _encode_hf(self, texts: Sequence[str], *, allow_special: bool = False) -> list[np.ndarray]:
        hf = self._hf
        if allow_special:
            if self._hf_special is None:
                from tokenizers import Tokenizer as HFTokenizer

                assert self._hf_json is not None
                special = HFTokenizer.from_str(self._hf_json)
                special.no_padding()  # a tokenizer.json may carry a truncation/padding setup: ids are never cut
                special.no_truncation()
                self._hf_special = special
            hf = self._hf_special
        assert hf is not None
        encode = getattr(hf, "encode_batch_fast", hf.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        return lists_to_arrays([e.ids for e in encodings])

    def encode_batch(self, texts: Sequence[str], *, allow_special: bool = False) -> list[np.ndarray]:
        """uint32 ids of each text alone (no BOS/EOS); special-token strings in the text stay plain text.

        Lone surrogates, which UTF-8 cannot carry, become U+FFFD first (as tiktoken does), on both engines.
        The arrays may be read-only views of the engine's buffer.

        `allow_special=True` matches special-token strings as the special tokens instead, as a rendered chat
        prompt needs; never use it on training data.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts; use encode() for one text")
        if len(texts) == 0:
            return []
        try:
            return self._encode_any(texts, allow_special)
        except (UnicodeEncodeError, TypeError):
            # Rare path: a text holding lone surrogates (JSON can carry them; UTF-8 cannot) or a non-string.
            return self._encode_any(_clean_texts(texts), allow_special)

    def _encode_any(self, texts: Sequence[str], allow_special: bool) -> list[np.ndarray]:
        if allow_special:
            if self._is_json:
                return self._encode_hf(texts, allow_special=True)
            assert self._tt_full is not None
            return [self._tt_full.encode_to_numpy(t, allowed_special="all") for t in texts]
        if self._tt is not None:
            if self.verify_chars > 0 and self._is_json:
                return self._encode_verifying(texts)
            return self._encode_tiktoken(texts)
        return self._encode_hf(texts)

    def _encode_verifying(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode, proving the fast path on the leading texts until `verify_chars` characters were checked."""
        take, budget = 0, self.verify_chars
        while take < len(texts) and budget > 0:
            budget -= len(texts[take])
            take += 1
        self.verify_chars = max(budget, 0)
        encoded = self._encode_tiktoken(texts)
        sample = list(texts[:take])
        if first_difference(self, sample, fast=encoded[:take]) is None:
            return encoded
        self.verify_sample(sample, what="first input")  # falls back, with the warning naming the text
        return self._encode_hf(texts)

    def encode(self, text: str, *, allow_special: bool = False) -> np.ndarray:
        """uint32 ids of one text (see `encode_batch`)."""
        return self.encode_batch([text], allow_special=allow_special)[0]

    def count_batch(self, texts: Sequence[str]) -> np.ndarray:
        """int64 token count of each text, as `encode_batch` would produce."""
        return np.fromiter((len(a) for a in self.encode_batch(texts)), dtype=np.int64, count=len(texts))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids` (special tokens rendered as their strings)."""
        id_list = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if self._is_json:
            assert self._hf is not None
            return self._hf.decode(id_list, skip_special_tokens=False)
        assert self._tt_full is not None
        return self._tt_full.decode(id_list)

    def verify_sample(self, texts: Sequence[str], *, what: str = "sample") -> bool:
        """Prove the fast path on real texts: ids must equal `tokenizers`' on every one.

        On the first difference the tokenizer falls back to `tokenizers` for good, with a warning naming that
        text. Returns True when the fast path stays on (False if it is off, for this or an earlier reason).
        """
        if self._tt is None or not self._is_json:
            return False
        failure = proof_failure(self, texts, what=what)
        if failure is None:
            return True
        self.fall_back(failure)
        return False

    # ------------------------------------------------------------------ the fast path's switches
    def use_fast_path(
        self, encoding: tiktoken.Encoding, *, rank_to_id: np.ndarray | None, preparer: TextPreparer
    ) -> None:
        """Encode ordinary text with `encoding`, a tiktoken conversion of this tokenizer.json.

        The loader and the stress proof call it (see `tokenization.fastpath`): `rank_to_id` maps tiktoken's ranks to ids when they
        differ, `preparer` replays the added tokens, normalizer and prefix space that tiktoken does not know.
        """
        self._tt = encoding
        self._rank_to_id = rank_to_id
        identity = preparer.normalize is None and not preparer.prefix_space and not preparer.has_added
        self._preparer = None if identity else preparer
        self.fast_path_reason = None

    def fall_back(self, reason: str) -> None:
        """Go back to the `tokenizers` engine for good, with a warning that says why."""
        self._tt = None
        self._rank_to_id = None
        self._preparer = None
        self.fast_path_reason = reason
        warnings.warn(
            f"{self.name}: fast path off, using tokenizers: {reason}", FastPathWarning, stacklevel=3
        )

    # ------------------------------------------------------------------ chat
    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render a conversation with the tokenizer's chat template, as transformers would."""
        if self.chat_template is None:
            raise TokenizerError(
                f"{self.name} has no chat template: add 'chat_template' to the tokenizer_config.json beside "
                f"its tokenizer.json ({self.source})"
            )
        tokens = special_token_strings(self._config)
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=tokens,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, backend={self.backend!r}, vocab_size={self.vocab_size}, "
            f"eos_id={self.eos_id}, bos_id={self.bos_id}, fingerprint={self.fingerprint[:12]}...)"
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Picklable for Dask and multiprocessing: rebuilt from the tokenizer.json text (or the tiktoken name)
        # by the loader's `rebuild` (through its cache), so a worker process converts a tokenizer once, not
        # once per task.
        state = {
            "name": self.name,
            "source": self.source,
            "config": self._config,
            "chat_template_name": self._chat_template_name,
            "num_threads": self.num_threads,
            "special": self._special_args,
            "fast": self._tt is not None,
            "fast_path_reason": self.fast_path_reason,
            "verify_chars": self.verify_chars,
        }
        if self._rebuild is None:
            raise TypeError(f"{self.name}: only a Tokenizer made by load_tokenizer can be pickled")
        if self._is_json:
            assert self._hf_json is not None
            return self._rebuild, ("json", self._hf_json, state)
        assert self._tt_full is not None
        return self._rebuild, ("tiktoken", self._tt_full.name, state)


def _clean_texts(texts: Sequence[str]) -> list[str]:
    """Texts with lone surrogates replaced by U+FFFD; a non-string is a TypeError naming its position."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text #{i} of the batch is {type(text).__name__}, not str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        out.append(text)
    return out


# ---------------------------------------------------------------------- proof of the fast path
def first_difference(
    tok: Tokenizer, texts: Sequence[str], fast: Sequence[np.ndarray] | None = None
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Index and both id arrays of the first text where the tiktoken engine and `tokenizers` disagree."""
    if len(texts) == 0:
        return None
    if fast is None:
        fast = tok._encode_tiktoken(texts)
    slow = tok._encode_hf(texts)
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        if a.shape != b.shape or not np.array_equal(a, b):
            return i, a, b
    return None


def describe_difference(text: str, fast: np.ndarray, slow: np.ndarray) -> str:
    """The text (cut at 80 characters) and the first ids where the two engines part."""
    n = min(len(fast), len(slow))
    at = int(np.argmax(fast[:n] != slow[:n])) if n and np.any(fast[:n] != slow[:n]) else n
    return (
        f"{text[:80]!r}{'...' if len(text) > 80 else ''} (first differing token at position {at}: "
        f"tiktoken {fast[at : at + 3].tolist()} vs tokenizers {slow[at : at + 3].tolist()})"
    )


def proof_failure(tok: Tokenizer, texts: Sequence[str], *, what: str) -> str | None:
    """None when the fast path gives `tokenizers`' ids on every text, else why not, naming the first text."""
    texts = list(texts)
    found = first_difference(tok, texts)
    if found is None:
        return None
    index, fast, slow = found
    return (
        f"ids differ from tokenizers on {what} text #{index}: {describe_difference(texts[index], fast, slow)}"
    )
