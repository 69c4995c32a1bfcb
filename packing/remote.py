"""Moving bytes from a remote shard folder: whole-file downloads retried over a window of time.

Why: a training job must ride out a shard server that restarts, a dropped connection or a 503 without
losing its place, and must not mistake any of them for a missing file (a refused connection is not a 404).
Shards are fetched with one plain GET of the whole file (``fs.get_file``), so servers without byte ranges
(``python -m http.server``) work, and hashed on the way. Transient failures (refused, reset, timeouts,
truncated bodies, HTTP 408/429/5xx) are retried with jittered exponential backoff until ``retry_window``
seconds have passed since the first failure; then `RemoteUnavailableError` names the URL, the last error,
and (once the stream adds it) the state to resume from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fsspec.callbacks import Callback
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

DEFAULT_RETRY_WINDOW = 300.0  # seconds a remote may stay unreachable before the stream gives up
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_CLIENT_ERRORS = frozenset(
    {"ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError"}
)


class RemoteUnavailableError(ConnectionError):
    """A remote shard folder stayed unreachable for the whole retry window.

    ``url`` is what could not be read; ``state`` (set by the stream or loader that was reading) is the
    ``state_dict()`` to resume from once the remote is back.
    """

    def __init__(self, message: str, *, url: str = "", state: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.state = state

    def with_state(self, state: dict[str, Any]) -> RemoteUnavailableError:
        """The same error, saying which state to resume from."""
        position = {k: state[k] for k in ("epoch", "consumed") if k in state}
        return RemoteUnavailableError(
            f"{self.args[0]}; resume from state {json.dumps(position)} (load_state_dict(error.state) "
            f"once the remote answers again)",
            url=self.url,
            state=state,
        )

    def __reduce__(self) -> tuple[Any, ...]:  # crosses DataLoader worker boundaries intact
        return (_rebuild, (self.args[0], self.url, self.state))


def _rebuild(message: str, url: str, state: dict[str, Any] | None) -> RemoteUnavailableError:
    return RemoteUnavailableError(message, url=url, state=state)


def http_status(error: BaseException) -> int | None:
    for name in ("status", "status_code", "code"):
        value = getattr(error, name, None)
        if isinstance(value, int):
            return value
    return None


def is_transient(error: BaseException) -> bool:
    """Worth retrying: network and server trouble, never a missing file or a bad checksum."""
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    status = http_status(error)
    if status is not None:
        return status in _TRANSIENT_STATUS
    if isinstance(error, OSError | TimeoutError | ConnectionError):
        return True
    # aiohttp's disconnect and payload errors are not all OSErrors; recognise them without importing aiohttp
    return bool({c.__name__ for c in type(error).__mro__} & _TRANSIENT_CLIENT_ERRORS)


class TruncatedTransfer(ConnectionError):
    """The body ended before the length the server announced (the connection dropped mid-file)."""


class _SizeCallback(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.announced: int | None = None

    def set_size(self, size: int | None) -> None:
        self.announced = size


class _HashingSink:
    """A file-like sink that hashes what it writes (fsspec's ``get_file`` accepts file-like targets)."""

    def __init__(self, path: Any) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by the caller through close())
        self.digest = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.written += len(data)
        return self._file.write(data)

    def read(self, *_: Any) -> bytes:  # present so fsspec treats this as file-like
        raise OSError("write-only")

    def tell(self) -> int:
        return self.written

    def close(self) -> None:
        self._file.close()


def download(fs: Any, remote: str, target: Any) -> str:
    """One whole-file GET of `remote` into `target` (a path); returns the sha256 hex of the bytes."""
    sink = _HashingSink(target)
    size = _SizeCallback()
    try:
        fs.get_file(remote, sink, callback=size)
    finally:
        sink.close()
    if size.announced is not None and sink.written != size.announced:
        raise TruncatedTransfer(f"{remote}: got {sink.written} of {size.announced} bytes")
    return sink.digest.hexdigest()


def retrying(url: str, window: float) -> Retrying:
    """Retry transient errors with jittered backoff for `window` seconds, then `RemoteUnavailableError`."""

    def give_up(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        elapsed = state.seconds_since_start or 0.0
        raise RemoteUnavailableError(
            f"{url}: unreachable for {elapsed:.1f} s over {state.attempt_number} attempts "
            f"(retry window {window:g} s); last error: {type(error).__name__}: {error}",
            url=url,
        ) from error

    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(window),
        wait=wait_random_exponential(multiplier=0.2, max=min(10.0, max(0.2, window / 4))),
        retry_error_callback=give_up,
        reraise=True,
    )


__all__ = [
    "DEFAULT_RETRY_WINDOW",
    "RemoteUnavailableError",
    "TruncatedTransfer",
    "download",
    "http_status",
    "is_transient",
    "retrying",
]
