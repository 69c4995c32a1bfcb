"""A circuit breaker shared by all workers: when the server stops accepting connections, every worker waits,
one probe asks the server every few seconds, and the run gives up after the outage window instead of retrying
sample after sample for hours."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from longctx.transport import ServerUnreachable

T = TypeVar("T")


class OutageBreaker:
    """Closed while the server accepts connections; open (all requests held) from the first refused connection
    until a probe gets an answer, or until `window` seconds have passed, when every waiting worker fails."""

    def __init__(
        self,
        url: str,
        probe: Callable[[], Awaitable[bool]],
        window: float,
        probe_every: float,
        say: Callable[[str], None] = print,
    ) -> None:
        self.url = url
        self._say = say
        self._probe = probe
        self.window = window
        self.probe_every = probe_every
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task[None] | None = None
        self.failure: ServerUnreachable | None = None
        self.outages = 0
        self.down_s = 0.0
        self._down_since = 0.0

    async def call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run `request` once the server is up; a refused connection opens the breaker and the request waits
        for the server to come back (a refused connection never reached the server, so it is not an attempt)."""
        while True:
            await self._up.wait()
            if self.failure is not None:
                raise self.failure
            try:
                return await request()
            except aiohttp.ClientConnectorError as exc:
                self.trip(exc)

    def trip(self, exc: BaseException) -> None:
        if not self._up.is_set():
            return
        self._up.clear()
        self.outages += 1
        self._down_since = time.monotonic()
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._say(
            f"the server at {self.url} refuses connections ({self._last_error}): all requests paused, probing "
            f"every {self.probe_every:g} s for up to {self.window:g} s"
        )
        self._prober = asyncio.create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.probe_every)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    if await self._probe():
                        self._say(
                            f"the server at {self.url} answers again after {time.monotonic() - self._down_since:.0f} s: resuming"
                        )
                        return
                down = time.monotonic() - self._down_since
                if down >= self.window:
                    self.failure = ServerUnreachable(
                        f"the server at {self.url} has not answered for {down:.0f} s (outage window "
                        f"--outage-window {self.window:g} s; last error {self._last_error}); answers so far "
                        "are saved: rerun the same command to resume"
                    )
                    return
        finally:
            self.down_s += time.monotonic() - self._down_since
            self._up.set()

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
