"""``Hub``: one pub/sub connection per API process that wakes whoever follows a job.

Every event a script appends to a job's stream is also published on a channel of the same name
(:mod:`aijobs.events`). The hub subscribes to a job's channel while someone in this process follows
it (an SSE client, a ``Prefer: wait`` request) and sets their wake-up flag on each message. The
message is only a nudge: followers read the stream itself, from their own cursor, so a message lost
to a reconnect costs at most one ``recheck_s`` of delay, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aijobs.keys import Keys

log = logging.getLogger(__name__)
RECONNECT_PAUSE_S = 0.5


class Hub:
    """Wake-ups for job followers in this process (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self._pubsub: Any = redis.pubsub()
        self._waiters: dict[bytes, set[asyncio.Event]] = {}
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        # One (un)subscribe at a time: redis-py's PubSub connects lazily and is not safe to race.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._pubsub.connect()
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def follow(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """A flag set whenever ``job_id`` gets a new event, while the block runs.

        The caller clears it before each read of the stream, so nothing between read and wait is
        missed: an event after the read sets the flag again.
        """
        channel = Keys.events(job_id).encode()
        flag = asyncio.Event()
        waiters = self._waiters.setdefault(channel, set())
        waiters.add(flag)
        try:
            if len(waiters) == 1:
                async with self._lock:
                    await self._pubsub.subscribe(channel)
                self._ready.set()
            yield flag
        finally:
            waiters.discard(flag)
            if not waiters and self._waiters.get(channel) is waiters:
                del self._waiters[channel]
                with contextlib.suppress(RedisError, OSError):
                    async with self._lock:
                        await self._pubsub.unsubscribe(channel)

    @property
    def following(self) -> int:
        """How many jobs this process follows now."""
        return len(self._waiters)

    async def _read(self) -> None:
        while True:
            if not self._pubsub.subscribed:
                self._ready.clear()
                await self._ready.wait()
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except Exception as exc:  # Redis restarting, mostly; whatever it is, followers re-read
                log.warning("live events: pub/sub failed (%s); reconnecting", exc)
                self._wake_all()  # they re-read their streams: nothing is missed
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if message is not None and message.get("type") == "message":
                for flag in self._waiters.get(message["channel"], ()):
                    flag.set()

    def _wake_all(self) -> None:
        for flags in self._waiters.values():
            for flag in flags:
                flag.set()
