"""Errors and warnings raised while loading or using a tokenizer."""

from __future__ import annotations


class TokenizerError(ValueError):
    """A tokenizer spec that cannot be loaded, or a token the tokenizer does not know.

    The message names the spec, file or token at fault and says what to do about it.
    """


class FastPathWarning(UserWarning):
    """The fast path was refused after it had been expected to work, or lost on a verification text."""


class SpecialTokenIdWarning(UserWarning):
    """A tokenizer's files declare a special-token id that `tokenizers` does not assign (see `special_ids`)."""
