"""Relative paths in the quality, shards and mixture sections are relative to the recipe's folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def resolve_curation_paths(recipe: Any, resolve: Callable[[str], str]) -> None:
    """Rewrite, in place, every local path of the sections this package adds (and input.local_copy)."""
    if recipe.input.local_copy:
        recipe.input.local_copy = resolve(recipe.input.local_copy)
    if recipe.quality is not None:
        for classifier in recipe.quality.classifiers:
            classifier.path = resolve(classifier.path)
        if recipe.quality.output:
            recipe.quality.output = resolve(recipe.quality.output)
    for target in recipe.shards:
        target.config["output_folder"] = resolve(target.config["output_folder"])
        tokenizer = target.config.get("tokenizer", "")
        if tokenizer.startswith((".", "/", "~")) or tokenizer.endswith(".json"):
            target.config["tokenizer"] = resolve(tokenizer)
    if recipe.mixture is not None and recipe.mixture.path:
        recipe.mixture.path = resolve(recipe.mixture.path)


def check_curation_files(recipe: Any) -> list[str]:
    """Problems with files the added sections need (classifier models), one line each."""
    problems = []
    if recipe.quality is not None and recipe.quality.enabled:
        for i, classifier in enumerate(recipe.quality.classifiers):
            if "://" not in classifier.path and not Path(classifier.path).is_file():
                problems.append(f"quality.classifiers.{i}.path: no such fastText model {classifier.path!r}")
    return problems
