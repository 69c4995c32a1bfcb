"""Nemotron-style curation: quality buckets by classifier ensembles, shard targets by length, mixtures."""
