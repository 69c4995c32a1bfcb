"""Document filters: datatrove's quality filters at speed, with the same decisions, and offline language ID.

``steps`` holds the datatrove steps the recipe builds, ``checks`` the filters' rules as plain functions, ``words``
the word split they share, ``offline`` the language filter that loads its model from a local file.
"""

from pipelines.filters.offline import (
    LID_MODELS,
    LocalModelLanguageFilter,
    OfflineModelError,
    cached_lid_model,
    resolve_lid_model,
)

__all__ = [
    "LID_MODELS",
    "LocalModelLanguageFilter",
    "OfflineModelError",
    "cached_lid_model",
    "resolve_lid_model",
]
