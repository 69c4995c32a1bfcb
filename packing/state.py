"""The stream's resumable state: global progress plus what must match for it to mean the same order.

Why global: all ranks advance in lock-step, so every rank holds the same state after the same number of
steps, any rank's state resumes the job, and a new world size deals the rest of the epoch from there.
"""

from __future__ import annotations

from typing import Any, Literal

STATE_FORMAT = "longtrove.stream"
STATE_VERSION = 1
Balance = Literal["pad", "drop", "uneven"]
BALANCES: tuple[Balance, ...] = ("pad", "drop", "uneven")


def rank_share(remaining: int, rank: int, world_size: int, balance: Balance) -> int:
    """Samples a rank takes of the `remaining` ones of an epoch, dealt round-robin from `rank`.

    ``pad`` and ``drop`` give every rank the same count (DDP collectives stay in step); ``uneven`` gives
    each rank its round-robin share, so ranks differ by at most one.
    """
    if balance == "pad":
        return -(-remaining // world_size)
    if balance == "drop":
        return remaining // world_size
    return max(0, -(-(remaining - rank) // world_size))


def make_state(epoch: int, consumed: int, world_size: int, identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "epoch": epoch,
        "consumed": consumed,
        "world_size": world_size,
        **identity,
    }


def check_state(state: dict[str, Any], identity: dict[str, Any], samples_per_epoch: int) -> tuple[int, int]:
    """(epoch, consumed) of a saved state, after checking it was saved on the same order."""
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: {state.get('format')!r}")
    for key, value in identity.items():
        if key == "sources":
            theirs = [{k: v for k, v in s.items() if k != "name"} for s in state.get(key, [])]
            ours = [{k: v for k, v in s.items() if k != "name"} for s in value]
            if theirs != ours:
                raise ValueError(
                    f"state was saved on other shard folders: {state.get(key)} (this stream: {value})"
                )
        elif state.get(key) != value:
            raise ValueError(f"state has {key}={state.get(key)!r} but this stream has {value!r}")
    consumed = int(state["consumed"])
    if not 0 <= consumed <= samples_per_epoch:
        raise ValueError(f"state consumed={consumed} is outside the epoch of {samples_per_epoch}")
    return int(state["epoch"]), consumed


__all__ = ["BALANCES", "STATE_FORMAT", "STATE_VERSION", "Balance", "check_state", "make_state", "rank_share"]
