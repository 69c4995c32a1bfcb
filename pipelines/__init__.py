"""Recipes of datatrove steps, the Dask executor, and the `longtrove` command line."""


def __getattr__(name: str):
    # lazy, so that `longtrove --help` does not import datatrove and Dask
    if name == "DaskPipelineExecutor":
        from pipelines.executor import DaskPipelineExecutor

        return DaskPipelineExecutor
    if name == "load_recipe":
        from pipelines.recipe import load_recipe

        return load_recipe
    if name == "run_recipe":
        from pipelines.runner import run_recipe

        return run_recipe
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
