"""Remote shards over a real HTTP server on loopback that is killed and restarted mid-epoch.

The server is ``python -m http.server``: no byte ranges, HTTP/1.0, exactly what the standard library ships.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from packing.format import ShardWriter, read_index, write_index
from packing.remote import RemoteUnavailableError, is_transient
from packing.stream import ShardStream
from tests.packing import test_stream as shared

prose_shards = shared.prose_shards


class LoopbackServer:
    """`python -m http.server` over a folder, on a fixed loopback port so it can come back at the same URL."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"http.server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture()
def server(prose_shards: Path):
    srv = LoopbackServer(prose_shards.parent)
    srv.start()
    yield srv
    srv.kill()


def mapped_cache_bytes(cache_dir: Path) -> int:
    """Bytes of distinct files under `cache_dir` that this process maps now, deleted ones included.

    Counted from /proc/self/maps, less the page rounding of each file's last page.
    """
    sizes: dict[str, int] = {}
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith(str(cache_dir)):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                sizes[parts[5].strip()] = sizes.get(parts[5].strip(), 0) + hi - lo
    return sum(sizes.values()) - len(sizes) * (os.sysconf("SC_PAGE_SIZE") - 1)


def local_order(folder: Path, **kw) -> list[int]:
    return shared.ids_of(ShardStream(folder, with_index=True, **kw))


def test_server_killed_and_restarted_mid_epoch(
    prose_shards: Path, server: LoopbackServer, tmp_path: Path
) -> None:
    index = read_index(prose_shards)
    biggest = max((prose_shards / s["path"]).stat().st_size for s in index["shards"])
    budget = 3 * biggest
    kw = {"seed": 5, "shuffle_block": 64}
    expected = local_order(prose_shards, **kw)
    stream = ShardStream(
        f"{server.url}/shards",
        with_index=True,
        cache_dir=tmp_path,
        cache_bytes=budget,
        prefetch=1,
        retry_window=60,
        **kw,
    )
    got, peak_mapped = [], 0
    restarted = threading.Event()
    for i, sample in enumerate(stream):
        got.append(int(sample["sample_id"]))
        if i == len(expected) // 3:  # the server dies for about a second, then comes back on the same port
            server.kill()
            downloads_before = stream._caches[0].downloads

            def come_back() -> None:
                time.sleep(1.0)
                server.start()
                restarted.set()

            threading.Thread(target=come_back, daemon=True).start()
        if i % 8 == 0:
            peak_mapped = max(peak_mapped, mapped_cache_bytes(tmp_path))
    assert restarted.is_set()
    assert got == expected  # nothing lost, nothing repeated, same order
    assert stream._caches[0].downloads > downloads_before  # shards really came over the network after it
    assert 0 < peak_mapped <= budget  # mapped shards count against the limit; evicted ones are unmapped


def test_outage_longer_than_the_window_names_the_url_and_the_state_to_resume(
    prose_shards: Path, server: LoopbackServer, tmp_path: Path
) -> None:
    kw = {"seed": 2, "shuffle_block": 64}
    expected = local_order(prose_shards, **kw)
    biggest = max(p.stat().st_size for p in prose_shards.glob("*.arrow"))
    url = f"{server.url}/shards"
    stream = ShardStream(
        url, with_index=True, cache_dir=tmp_path, cache_bytes=2 * biggest, prefetch=0, retry_window=1.0, **kw
    )
    got = []
    it = iter(stream)
    for _ in range(100):
        got.append(int(next(it)["sample_id"]))
    server.kill()
    started = time.monotonic()
    with pytest.raises(RemoteUnavailableError) as caught:
        for sample in it:
            got.append(int(sample["sample_id"]))
    assert time.monotonic() - started < 30
    error = caught.value
    message = str(error)
    assert url in message and "resume from state" in message and "unreachable" in message
    assert error.state is not None and error.state["consumed"] == len(got)
    assert got == expected[: len(got)]

    server.start()
    resumed = ShardStream(url, with_index=True, cache_dir=tmp_path / "again", prefetch=0, **kw)
    resumed.load_state_dict(error.state)
    assert got + shared.ids_of(resumed) == expected


def test_dataloader_worker_error_carries_the_loader_state(
    prose_shards: Path, server: LoopbackServer, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from packing.torch import StreamLoader

    biggest = max(p.stat().st_size for p in prose_shards.glob("*.arrow"))
    stream = ShardStream(
        f"{server.url}/shards",
        seed=1,
        shuffle_block=64,
        cache_dir=tmp_path,
        cache_bytes=2 * biggest,
        prefetch=0,
        retry_window=1.0,
    )
    loader = StreamLoader(stream, batch_size=8, num_workers=2)
    batches = 0
    with pytest.raises(RemoteUnavailableError, match="resume from state") as caught:
        for _ in loader:
            batches += 1
            if batches == 5:
                server.kill()
    assert caught.value.state is not None and caught.value.state["consumed"] == 8 * batches


def test_shards_larger_than_a_read_block_come_whole_from_a_server_without_ranges(
    prose_shards: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "site" / "big"
    rng = np.random.default_rng(0)
    seq_len, rows = 4096, 640  # one shard of about 10 MiB
    writer = ShardWriter(folder, seq_len=seq_len, pad_id=0, max_shard_bytes=64 * 2**20)
    data = rng.integers(0, 4000, size=(rows, seq_len), dtype=np.uint32)
    for row in data:
        writer.write(row, np.array([seq_len // 2, seq_len // 2], np.int32))
    entries = writer.close()
    tokens = rows * seq_len
    stats = {
        "documents": 2 * rows,
        "tokens": tokens,
        "padding_tokens": 0,
        "split_documents": 0,
        "dropped_documents": 0,
    }
    write_index(
        folder, tokenizer=read_index(prose_shards)["tokenizer"], seq_len=seq_len, shards=entries, stats=stats
    )
    assert len(entries) == 1 and os.path.getsize(folder / entries[0]["path"]) > 8 * 2**20
    srv = LoopbackServer(folder.parent)
    srv.start()
    try:
        remote = ShardStream(f"{srv.url}/big", shuffle=False, cache_dir=tmp_path / "cache")
        got = np.stack([s["input_ids"].copy() for s in remote])
    finally:
        srv.kill()
    np.testing.assert_array_equal(got, data)


def test_transient_and_permanent_errors_are_told_apart() -> None:
    import aiohttp

    def response_error(status: int) -> aiohttp.ClientResponseError:
        return aiohttp.ClientResponseError(request_info=None, history=(), status=status)

    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(response_error(503)) and is_transient(response_error(429))
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert is_transient(TimeoutError())
    assert not is_transient(response_error(403)) and not is_transient(response_error(404))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(ValueError("sha256 mismatch"))
