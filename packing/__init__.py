"""Token ids to packed Arrow shards, and shards to a resumable stream for trainer ranks."""
