"""The shards step proves the tiktoken fast path on each rank's first real input, not only on the stress set."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SPLIT_PATTERN
from tests.packing.test_packer import read_documents
from tests.tokenization.conftest import edited_copy, hf_ids, hf_reference


def test_a_difference_only_real_input_shows_falls_back_to_exact_ids(
    tmp_path: Path, bpe_tokenizer_path: Path, dask_client
) -> None:
    from pipelines.steps import ShardsConfig, pack_inputs
    from tokenization import load_tokenizer

    # A pre-tokenizer regex that treats one character (absent from the stress set) differently: tiktoken's
    # regex engine and `tokenizers`' disagree on it, so only real text containing it can tell them apart.
    pattern = SPLIT_PATTERN.replace(r"[^\r\n\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}☃]").replace(
        r"[^\s\p{L}\p{N}]", r"[^\s\p{L}\p{N}☃]"
    )
    path = edited_copy(
        bpe_tokenizer_path,
        tmp_path / "snowman" / "tokenizer.json",
        lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": pattern}),
    )
    assert load_tokenizer(path).backend == "tiktoken"  # the stress set alone does not catch it
    texts = {f"d{i}": f"document {i}: a ☃ in the snow, and plain words after it." for i in range(6)}
    data = tmp_path / "in" / "part.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    config = ShardsConfig(
        output_folder=str(tmp_path / "shards"), tokenizer=str(path), seq_len=256, eos="</s>"
    )

    pack_inputs([str(data)], config, client=dask_client, progress=False)

    documents, _ = read_documents(tmp_path / "shards")
    reference = hf_reference(path)
    eos = reference.token_to_id("</s>")
    expected = dict(zip(texts, hf_ids(reference, list(texts.values())), strict=True))
    assert {k: v.tolist() for k, v in documents.items()} == {k: ids + [eos] for k, ids in expected.items()}
