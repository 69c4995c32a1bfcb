"""`longtrove demo`'s packing stage: a tokenizer trained on the curated sample, then shards of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.steps import ShardsConfig, pack_inputs

DEMO_SEQ_LEN = 1024  # the curated sample holds about 10K tokens
DEMO_EOS = "<|endoftext|>"
# Llama 3's pre-tokenizer regex: the tokenizer shape the fast path is built for.
_DEMO_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_demo_tokenizer(texts: list[str], path: Path, vocab_size: int = 8192) -> Path:
    """A byte-level BPE trained on the demo's own text: nothing to download, same texts give the same file."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_DEMO_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[DEMO_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    from packing.format import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tokenizer.to_str())
    return path


def demo_stage(ctx: Any) -> dict[str, Any]:
    """`longtrove demo`, after curation: tokenize and pack the curated documents and report the shard stats."""
    import pyarrow.parquet as pq

    curated = sorted(Path(ctx.curated_dir).rglob("*.parquet"))
    texts = [t for p in curated for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
    tokenizer = train_demo_tokenizer(texts, Path(ctx.out_dir) / "tokenizer" / "tokenizer.json")
    config = ShardsConfig(
        output_folder=str(Path(ctx.out_dir) / "shards"),
        tokenizer=str(tokenizer),
        seq_len=DEMO_SEQ_LEN,
        eos=DEMO_EOS,
    )
    workers = getattr(getattr(ctx.recipe, "executor", None), "workers", None)
    try:  # the cluster the curation ran on, when the caller keeps one open
        from distributed import default_client

        client = default_client()
    except ValueError:
        client = None
    index = pack_inputs(
        [str(p) for p in curated], config, workers=workers, client=client, progress=False, overwrite=True
    )
    stats = index["stats"]
    rows = sum(s["rows"] for s in index["shards"])
    return {
        "folder": config.output_folder,
        "tokenizer": str(tokenizer),
        "seq_len": DEMO_SEQ_LEN,
        "shards": len(index["shards"]),
        "rows": rows,
        "documents": stats["documents"],
        "tokens": stats["tokens"],
        "padding": f"{stats['padding_tokens'] / max(1, rows * DEMO_SEQ_LEN):.2%}",
        "split_documents": stats["split_documents"],
    }
