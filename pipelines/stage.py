"""A stage: one datatrove pipeline, how many ranks run it, and (for iterative work) what runs after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stage:
    """One datatrove pipeline and how many ranks run it.

    ``follow_up``, when set, is called with the stage's merged stats once it has finished and returns the stages
    to run right after it: how a loop whose length depends on the data (connected-component rounds) stays a
    sequence of ordinary stages, each resumable on its own.
    """

    name: str
    pipeline: list = field(repr=False)
    tasks: int
    follow_up: Callable[[Any], list[Stage]] | None = field(default=None, repr=False)
