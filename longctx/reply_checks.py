"""Every reply says what the server did: `usage.prompt_tokens` (what it read) and `completion_tokens` with
`finish_reason` (what it was allowed to write). A reply that read another prompt than the suite built, or whose
answer budget the server cut, would make a wrong score look right: such rows are marked, counted, and past a
small number the run stops with the reason and the fix."""

from __future__ import annotations

from collections import Counter
from typing import Any

from longctx.eval_config import EvalConfig
from longctx.transport import EndpointError

PROMPT_MISMATCH = "prompt_mismatch"
BUDGET_CUT = "budget_cut"
NO_USAGE = "no_usage"
FLAGS = (PROMPT_MISMATCH, BUDGET_CUT, NO_USAGE)


class RunStopped(EndpointError):
    """Too many replies show the server is not running the suite as built: stop, with the fix."""


class ReplyChecks:
    """Judges each answered row against its sample; shared by all workers of a run (one event loop)."""

    def __init__(self, cfg: EvalConfig, bos: int | None) -> None:
        self.cfg = cfg
        self.bos = None if cfg.chat else bos
        """Tokens the server adds before the suite's prompt; learnt from the first reply when not known."""
        self.flagged: Counter[str] = Counter()
        self.stopped: RunStopped | None = None

    def expected_prompt_tokens(self, sample: dict[str, Any]) -> int | None:
        value = sample.get("chat_token_count" if self.cfg.chat else "token_count")
        return int(value) if value is not None else None

    def flag(self, row: dict[str, Any], sample: dict[str, Any]) -> str | None:
        """The mark for an answered row (prompt_mismatch, budget_cut, or no_usage for a reply that does not say
        what the server read and wrote), or None when the reply is as built."""
        expected, got = self.expected_prompt_tokens(sample), row.get("prompt_tokens")
        if not isinstance(got, int) or not isinstance(row.get("completion_tokens"), int):
            return NO_USAGE  # an answer that cannot be checked is never taken as the model's
        if expected is not None and isinstance(got, int):
            extra = got - expected
            if self.bos is None and extra in (0, 1):
                self.bos = extra  # the server's BOS (or, in chat mode, a template's), learnt once
            if extra != (self.bos if self.bos is not None else 0):
                return PROMPT_MISMATCH
        written, budget = row.get("completion_tokens"), int(sample["max_new_tokens"])
        if row.get("finish_reason") == "length" and isinstance(written, int) and written < budget:
            return BUDGET_CUT
        return None

    def count(self, mark: str, row: dict[str, Any], sample: dict[str, Any]) -> None:
        """Count a marked row; raise RunStopped once `max_flagged` rows carry the same mark."""
        self.flagged[mark] += 1
        if self.stopped is None and self.flagged[mark] >= self.cfg.max_flagged:
            self.stopped = RunStopped(self.reason(mark, row, sample))
        if self.stopped is not None:
            raise self.stopped  # the same reason from every worker that finishes after the stop

    def reason(self, mark: str, row: dict[str, Any], sample: dict[str, Any]) -> str:
        n = self.flagged[mark]
        if mark == NO_USAGE:
            return (
                f"stopped after {n} replies without usage.prompt_tokens and usage.completion_tokens ({row['id']}): "
                "the prompt the server read and the answer budget it allowed cannot be checked. Serve the model "
                "with a server that reports usage in each reply (vLLM, SGLang, TensorRT-LLM and llama.cpp do), "
                "or remove the proxy that strips it"
            )
        if mark == BUDGET_CUT:
            return (
                f"stopped after {n} replies with a cut answer budget ({row['id']}: {row.get('completion_tokens')} "
                f"of {sample['max_new_tokens']} tokens, finish_reason 'length'): the server's context is too "
                f"small for length {row['length']}. Serve the model with a context of at least "
                f"{int(row['length']) + (self.bos or 1)} (the length plus the BOS), or leave that length out "
                "with --lengths"
            )
        expected = self.expected_prompt_tokens(sample)
        read = f"{row['id']}: the server read {row.get('prompt_tokens')} prompt tokens where the suite built {expected}"
        if (
            self.cfg.chat
            and sample.get("answer_prefix")
            and (row.get("prompt_tokens") or 0) > (expected or 0)
        ):
            return (
                f"stopped after {n} prompt mismatches ({read}): this server does not continue an assistant "
                "prefix (it ignores continue_final_message and closes the turn). Use completion mode (drop --chat) "
                "or a server that supports continue_final_message, such as vLLM"
            )
        return (
            f"stopped after {n} prompt mismatches ({read}{f' plus {self.bos} BOS' if self.bos else ''}): the "
            "suite and the server disagree on the tokenizer"
            + (" or the chat template" if self.cfg.chat else "")
            + ". Build the suite with the served model's tokenizer (`longtrove longctx build --tokenizer ...`)"
        )
