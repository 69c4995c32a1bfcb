"""Recipes of datatrove steps, the Dask executor, and the `longtrove` command line."""
