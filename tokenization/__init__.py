"""Text to token ids, exact and fast.

`load_tokenizer(spec)` gives a `Tokenizer` whose `encode_batch(texts)` returns uint32 numpy arrays of the
text alone (no BOS/EOS; special-token strings stay text). A byte-level BPE tokenizer.json runs on tiktoken's
native encoder when that is proved to give the same ids as `tokenizers` (see `tokenization.fastpath`).
"""

from tokenization.errors import TokenizerError
from tokenization.fastpath import FastPathWarning, stress_texts
from tokenization.loading import load_tokenizer
from tokenization.tokenizer import Tokenizer, smallest_dtype

__all__ = [
    "FastPathWarning",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "smallest_dtype",
    "stress_texts",
]
