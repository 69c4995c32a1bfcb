"""Filters that must work offline.

datatrove's LanguageFilter downloads its fastText model on first use; here the model is a file the recipe names
(or one already in datatrove's download cache), checked before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from datatrove.pipeline.filters import LanguageFilter

LID_MODELS = {
    "ft176": "https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin",
    "glotlid": "hf://cis-lmu/glotlid/model_v3.bin",
}


class OfflineModelError(FileNotFoundError):
    """A filter needs a model file that is not on this machine."""


def cached_lid_model(backend: str) -> Path | None:
    """The model datatrove would have downloaded earlier, if it is in its cache."""
    from fsspec.core import strip_protocol
    from huggingface_hub import cached_assets_path

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=backend)
    path = Path(folder) / strip_protocol(LID_MODELS[backend]).replace("/", "_")
    return path if path.is_file() else None


def resolve_lid_model(model_path: str | None, backend: str, where: str) -> str:
    """A local model file for language identification, or an error saying what to do."""
    if model_path:
        path = Path(os.path.expanduser(model_path))
        if not path.is_file():
            raise OfflineModelError(f"{where}.model_path: no such file {str(path)!r}")
        return str(path)
    cached = cached_lid_model(backend)
    if cached:
        return str(cached)
    raise OfflineModelError(
        f"{where}: language identification needs a fastText model on this machine, and none is available "
        f"offline. Download {LID_MODELS[backend]} where you have network access, then set {where}.model_path "
        f"to the file (or remove the language filter from the recipe)."
    )


class LocalModelLanguageFilter(LanguageFilter):
    """datatrove's LanguageFilter with its fastText model loaded from a local file."""

    name = "🌍 Language ID (local model)"

    def __init__(self, model_path: str, **kwargs):
        super().__init__(**kwargs)
        self.model_path = model_path

    def run(self, data, rank: int = 0, world_size: int = 1):
        if self.model._model is None:
            from fasttext.FastText import _FastText

            self.model._model = _FastText(self.model_path)
        return super().run(data, rank, world_size)
