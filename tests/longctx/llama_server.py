"""A real llama.cpp server for the runner's tests: a tiny random-weight Llama written as GGUF here (with the
test suite's own BPE tokenizer and chat template), served by llama-cpp-python's OpenAI-compatible server on
loopback. The weights are random, so answers are noise; what the tests check is what the server says it did."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

MODEL_NAME = "tiny-llama"
EMBED, LAYERS, HEADS, FEED_FORWARD = 64, 2, 4, 128


def write_tiny_llama(
    path: Path,
    tokenizer_json: Path,
    chat_template: str,
    *,
    bos: str = "<s>",
    eos: str = "</s>",
    seed: int = 0,
) -> Path:
    """A 2-layer Llama with random weights and the given byte-level BPE tokenizer (a Hugging Face
    tokenizer.json whose pre-tokenizer splits like Llama 3's), as one GGUF file."""
    import gguf

    spec = json.loads(tokenizer_json.read_text())
    vocab: dict[str, int] = spec["model"]["vocab"]
    special = {t["content"]: t["id"] for t in spec["added_tokens"] if t.get("special")}
    for content, token_id in special.items():
        vocab.setdefault(content, token_id)
    by_id = {token_id: token for token, token_id in vocab.items()}
    # An id the tokenizer leaves out (cl100k has one) gets a placeholder the text never produces.
    tokens = [by_id.get(i, f"[UNUSED{i}]") for i in range(max(by_id) + 1)]
    types = [
        gguf.TokenType.CONTROL
        if token in special
        else gguf.TokenType.NORMAL
        if i in by_id
        else gguf.TokenType.UNUSED
        for i, token in enumerate(tokens)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(8192)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(
        "llama-bpe"
    )  # Llama 3's split regex: the shape the test tokenizer is trained with
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special[bos])
    writer.add_eos_token_id(special[eos])
    writer.add_add_bos_token(True)
    writer.add_chat_template(chat_template)

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    output = weights(len(tokens), EMBED)
    output[list(special.values())] = (
        0.0  # special tokens (EOS among them) never win: answers run to max_tokens
    )
    writer.add_tensor("token_embd.weight", weights(len(tokens), EMBED))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(EMBED, FEED_FORWARD))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on a loopback port, started, killed and restarted by the tests."""

    def __init__(self, model: Path, n_ctx: int, log: Path, port: int | None = None) -> None:
        self.model, self.n_ctx, self.log = model, n_ctx, log
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model), "--model_alias", MODEL_NAME,
            "--n_ctx", str(self.n_ctx), "--n_threads", "1", "--n_batch", "512",
            "--host", "127.0.0.1", "--port", str(self.port), "--verbose", "False",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
