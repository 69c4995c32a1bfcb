"""Named open datasets: the built-in catalogue (``catalog.yaml``) and the readers that resolve names to files."""

from pipelines.datasets.catalog import DatasetAccessError, NamedSource, is_named, load_catalog, resolve

__all__ = ["DatasetAccessError", "NamedSource", "is_named", "load_catalog", "resolve"]
