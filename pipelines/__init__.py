"""Recipes of datatrove steps, the Dask executor, and the `longtrove` command line."""


def __getattr__(name: str):
    # lazy, so that `longtrove --help` does not import datatrove and Dask
    if name == "DaskPipelineExecutor":
        from pipelines.executor import DaskPipelineExecutor

        return DaskPipelineExecutor
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
