"""The table of server dialects read against the replies each server documents (llama.cpp's C++ server cannot
run here; llama-cpp-python's and the vLLM-shaped reference server are run by the other tests)."""

from __future__ import annotations

import pytest

from longctx.eval_config import EvalConfig
from longctx.preflight import ServerFacts, check_lengths_fit, describe
from longctx.server_dialects import CONTEXT_SOURCES, SLOT_SOURCES, TOKENIZE_ROUTES
from longctx.transport import EndpointError

# Trimmed replies as the servers send them.
VLLM_MODELS = {"object": "list", "data": [{"id": "meta-llama/Llama-3.1-8B", "max_model_len": 131072}]}
LLAMA_CPP_PROPS = {"default_generation_settings": {"n_ctx": 8192, "params": {}}, "total_slots": 2}
LLAMA_CPP_PYTHON_MODELS = {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "me"}]}


def _first(sources, replies: dict, model: str):
    for source in sources:
        value = source.read(replies.get(source.path), model)
        if value is not None:
            return value, source.servers
    return None, None


def test_each_server_states_its_context_and_slots_where_the_table_says():
    assert _first(CONTEXT_SOURCES, {"/v1/models": VLLM_MODELS}, "meta-llama/Llama-3.1-8B") == (
        131072,
        "vLLM, SGLang",
    )
    # Another model's entry says nothing about this one.
    assert _first(CONTEXT_SOURCES, {"/v1/models": VLLM_MODELS}, "other") == (None, None)
    assert _first(CONTEXT_SOURCES, {"/props": LLAMA_CPP_PROPS}, "any") == (8192, "llama.cpp")
    assert _first(SLOT_SOURCES, {"/props": LLAMA_CPP_PROPS}, "any") == (2, "llama.cpp")
    assert _first(CONTEXT_SOURCES, {"/v1/models": LLAMA_CPP_PYTHON_MODELS}, "tiny") == (None, None)


def test_tokenize_routes_ask_each_server_in_its_own_words():
    vllm, llama_cpp, llama_cpp_python = TOKENIZE_ROUTES
    assert (vllm.path, vllm.text_key, vllm.takes_messages, vllm.counts_bos) == (
        "/tokenize",
        "prompt",
        True,
        False,
    )
    assert (llama_cpp.path, llama_cpp.text_key, llama_cpp.count_key) == ("/tokenize", "content", "tokens")
    assert llama_cpp.without_bos == {"add_special": False} and llama_cpp.with_bos == {"add_special": True}
    assert (llama_cpp_python.path, llama_cpp_python.counts_bos) == ("/extras/tokenize/count", True)


def test_a_server_with_fewer_slots_lowers_the_concurrency_and_says_so():
    cfg = EvalConfig(endpoint="http://127.0.0.1:8080/v1", model="m", concurrency=8)
    facts = ServerFacts(models=["m"], context=8192, context_from="GET /props, llama.cpp", slots=2)
    facts.slots_from = "GET /props, llama.cpp"
    line = describe(facts, cfg)
    assert "context 8,192 tokens (GET /props, llama.cpp)" in line
    assert "--concurrency 8 lowered to the server's 2 slot(s)" in line
    # Length 8192 plus the BOS does not fit a context of 8192; 4096 does.
    facts.bos = 1
    with pytest.raises(EndpointError, match=r"8192 \(needs 8,193\).*--lengths 4096"):
        check_lengths_fit(facts, {4096: 4096, 8192: 8192}, cfg.base_url)
