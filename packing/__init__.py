"""Token ids to packed Arrow shards, and shards to a resumable stream for trainer ranks."""

from packing.stream import ShardStream

__all__ = ["ShardStream"]
