"""Dedup that scales: datatrove's exact and MinHash methods on stages that spread every step over many tasks.

``shingles``, ``xxh64``, ``minhash``, ``components`` and ``exact`` hold the array work as plain functions (no
Dask, no files); ``steps`` wraps them as datatrove steps; ``stages`` builds the recipe's dedup stages from them.
"""
