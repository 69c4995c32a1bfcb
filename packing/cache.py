"""A bounded local cache of remote shards (any fsspec filesystem), filled ahead of need.

Why: a trainer cannot memory-map ``s3://`` directly, and a rank must not copy the whole dataset to local
disk. Shards are downloaded (with retries) to a temporary name, hashed on the way, checked against the
index's sha256, then renamed into place, so a file in the cache is always complete and verified. Files are
stored by checksum, so a re-written folder never serves a stale shard. The least recently used files are
deleted when the cache passes ``max_bytes`` (shards still mapped by a reader stay readable until unmapped,
as POSIX keeps deleted files alive). A small thread pool downloads the next shards of the order while the
current one is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec

from packing.format import INDEX_FILE, ShardFormatError, read_index
from packing.remote import DEFAULT_RETRY_WINDOW, download, retrying


def default_cache_dir() -> Path:
    """``$LONGTROVE_CACHE``, else ``$XDG_CACHE_HOME/longtrove/shards`` (``~/.cache/longtrove/shards``)."""
    if os.environ.get("LONGTROVE_CACHE"):
        return Path(os.environ["LONGTROVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "longtrove" / "shards"


class ShardCache:
    """Local copies of the shards of one remote shard folder, bounded in bytes, prefetched in order."""

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int = 16 * 1024**3,
        prefetch: int = 2,
        storage_options: dict[str, Any] | None = None,
        verify: bool = True,
        retry_window: float = DEFAULT_RETRY_WINDOW,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dir = self.dir / key
        self.objects = self.dir / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.prefetch_depth = max(0, prefetch)
        self.verify = verify
        self.retry_window = retry_window
        self.downloads = 0  # files fetched by this process (for tests and logs)
        self._lock = threading.RLock()
        self._inflight: dict[str, Future[Path]] = {}
        self._pending: set[str] = set()  # prefetched, not yet asked for: not evicted
        self._present: set[str] = set()  # fetched by this process and not evicted by it
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    # -- index ----------------------------------------------------------------------------------

    def read_index(self) -> dict[str, Any]:
        """Fetch `index.json` afresh (it is small and says which shards exist) and validate it."""
        remote = f"{self.root}/{INDEX_FILE}"
        try:
            data = retrying(f"{self.url}/{INDEX_FILE}", self.retry_window)(self.fs.cat_file, remote)
        except FileNotFoundError as e:
            raise ShardFormatError(
                f"{self.url}/{INDEX_FILE}: no index.json (not a finished shard folder)"
            ) from e
        local = self.dir / INDEX_FILE
        tmp = local.with_name(f".{INDEX_FILE}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, local)
        try:
            return read_index(self.dir)
        except ShardFormatError as e:
            raise ShardFormatError(f"{self.url}/{INDEX_FILE}: {e}") from e

    # -- shards ---------------------------------------------------------------------------------

    def path_for(self, sha256: str) -> Path:
        return self.objects / f"{sha256}.arrow"

    def get(self, relpath: str, sha256: str) -> Path:
        """Local path of a shard, downloading it now unless it is cached or on its way."""
        self._check_fork()
        target = self.path_for(sha256)
        with self._lock:
            self._pending.discard(sha256)
            future = self._inflight.get(sha256)
        if future is not None:
            future.result()
        if target.exists():
            with contextlib.suppress(FileNotFoundError):  # another process may evict it meanwhile
                os.utime(target)
            return target
        return self._fetch(relpath, sha256)

    def prefetch(self, entries: list[tuple[str, str]]) -> None:
        """Start downloading the first shards of `entries` (in order of need) that are not cached yet.

        At most `prefetch` shards are ever fetched ahead and not yet asked for, so the cache stays
        within `max_bytes` plus that many shards.
        """
        if self.prefetch_depth == 0:
            return
        self._check_fork()
        with self._lock:  # forget shards fetched for a read order that was abandoned
            self._pending &= {sha for _, sha in entries} | set(self._inflight)
        for relpath, sha256 in entries:
            with self._lock:
                if len(self._pending) >= self.prefetch_depth:  # fetched or on the way, not yet used
                    return
                if sha256 in self._inflight or sha256 in self._present:
                    continue
                if self.path_for(sha256).exists():  # fetched by another process
                    self._present.add(sha256)
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.prefetch_depth, thread_name_prefix="shard-prefetch")
                self._pending.add(sha256)
                future = self._pool.submit(self._fetch, relpath, sha256)
                self._inflight[sha256] = future
                future.add_done_callback(lambda _f, key=sha256: self._done(key))

    def _done(self, sha256: str) -> None:
        with self._lock:
            self._inflight.pop(sha256, None)

    def _check_fork(self) -> None:
        # a forked DataLoader worker inherits neither the threads nor their futures
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._lock = threading.RLock()
            self._inflight, self._pending, self._present, self._pool = {}, set(), set(), None

    def _fetch(self, relpath: str, sha256: str) -> Path:
        remote = f"{self.root}/{relpath}"
        target = self.path_for(sha256)
        try:
            retrying(f"{self.url}/{relpath}", self.retry_window)(self._download, remote, target, sha256)
        except FileNotFoundError as e:
            raise ShardFormatError(f"{self.url}/{relpath}: listed in {INDEX_FILE} but missing") from e
        self.downloads += 1
        with self._lock:
            self._present.add(sha256)
        self._evict(keep=sha256)
        return target

    def _download(self, remote: str, target: Path, sha256: str) -> None:
        """One attempt: the whole file to a temporary name, checked, then renamed into place."""
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            digest = download(self.fs, remote, tmp)
            if self.verify and digest != sha256:
                raise ShardFormatError(
                    f"{self.url}/{remote.rsplit('/', 1)[-1]}: sha256 {digest[:16]}... does not "
                    f"match {INDEX_FILE} ({sha256[:16]}...): the remote shard is corrupted or truncated"
                )
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _evict(self, keep: str) -> None:
        """Delete least recently used shards until the cache fits `max_bytes` (never `keep` or pending)."""
        files = []
        total = 0
        for entry in os.scandir(self.objects):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            total += st.st_size
            files.append((st.st_mtime_ns, entry.name, st.st_size))
        if total <= self.max_bytes:
            return
        with self._lock:
            protected = {keep, *self._pending, *self._inflight}
        for _, name, size in sorted(files):
            if total <= self.max_bytes:
                break
            if name.removesuffix(".arrow") in protected:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.objects / name).unlink()
            with self._lock:
                self._present.discard(name.removesuffix(".arrow"))
            total -= size

    def cached_bytes(self) -> int:
        """Bytes of complete shards in the cache now."""
        total = 0
        for entry in os.scandir(self.objects):
            if not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):  # evicted while we look
                    total += entry.stat().st_size
        return total
