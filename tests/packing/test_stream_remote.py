"""Remote shard folders through fsspec (the in-memory and local filesystems, real fsspec code paths)."""

from __future__ import annotations

import uuid
from concurrent.futures import wait
from pathlib import Path

import fsspec
import numpy as np
import pytest

from packing.format import ShardFormatError, read_index
from packing.stream import ShardStream
from tests.packing import test_stream as shared

prose_shards = shared.prose_shards


@pytest.fixture()
def remote_url(prose_shards: Path) -> str:
    """The prose shard folder uploaded to fsspec's memory filesystem."""
    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}/prose"
    for path in sorted(prose_shards.iterdir()):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.name}", path.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_remote_stream_matches_the_local_one_within_a_bounded_cache(
    prose_shards: Path, remote_url: str, tmp_path: Path
) -> None:
    index = read_index(prose_shards)
    biggest = max((prose_shards / s["path"]).stat().st_size for s in index["shards"])
    budget = 6 * biggest
    local = ShardStream(prose_shards, seed=3, shuffle_block=64, with_index=True)
    remote = ShardStream(
        remote_url,
        seed=3,
        shuffle_block=64,
        with_index=True,
        cache_dir=tmp_path,
        cache_bytes=budget,
        prefetch=2,
    )
    peak = 0
    count = 0
    for a, b in zip(local, remote, strict=True):
        assert int(a["sample_id"]) == int(b["sample_id"])
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["doc_lengths"], b["doc_lengths"])
        if count % 16 == 0:
            peak = max(peak, remote._caches[0].cached_bytes())
        count += 1
    assert count == len(shared.read_rows(prose_shards)[0])
    cache = remote._caches[0]
    assert peak <= budget + 2 * biggest  # the budget, plus shards still being prefetched
    shards = len(index["shards"])
    assert shards <= cache.downloads <= 2 * shards  # a block's shards are fetched about once each


def test_prefetch_fetches_the_next_shards_ahead(remote_url: str, tmp_path: Path) -> None:
    stream = ShardStream(remote_url, seed=1, shuffle_block=32, cache_dir=tmp_path, prefetch=3)
    it = iter(stream)
    next(it)
    cache = stream._caches[0]
    wait(list(cache._inflight.values()))
    assert len(list(cache.objects.glob("*.arrow"))) >= 2  # more than the one being read


def test_corrupted_remote_shard_names_the_url(prose_shards: Path, remote_url: str, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    name = read_index(prose_shards)["shards"][0]["path"]
    path = remote_url.removeprefix("memory://") + "/" + name
    data = bytearray(fs.cat_file(path))
    data[100] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    with pytest.raises(ShardFormatError, match=rf"{remote_url}/{name}: sha256 .* corrupted"):
        list(ShardStream(remote_url, shuffle=False, cache_dir=tmp_path, prefetch=0))
    assert not list((tmp_path).rglob("*.arrow"))  # nothing unverified was left in the cache


def test_missing_remote_index_is_named(tmp_path: Path) -> None:
    with pytest.raises(ShardFormatError, match="memory:///nowhere/index.json: no index.json"):
        ShardStream("memory:///nowhere", cache_dir=tmp_path)


def test_file_url_goes_through_the_cache(prose_shards: Path, tmp_path: Path) -> None:
    local = [int(s["sample_id"]) for s in ShardStream(prose_shards, seed=2, with_index=True)]
    remote = ShardStream(f"file://{prose_shards}", seed=2, with_index=True, cache_dir=tmp_path)
    assert [int(s["sample_id"]) for s in remote] == local
    assert remote._caches[0].downloads == len(read_index(prose_shards)["shards"])
