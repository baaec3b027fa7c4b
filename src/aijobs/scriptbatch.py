"""Coalesce calls of one Lua script made in the same event-loop turn into one pipeline.

With thousands of jobs in flight, each claim and each finish is a script call. redis-py spends tens
of microseconds per command on connection checkout and a write syscall, so one pipeline carrying
every call issued in a loop turn costs a fraction of the same calls sent one by one. A caller waits
at most one loop turn longer; each call still gets its own result or exception.

Calls go out as ``EVALSHA``. redis-py's own script pipelines ask ``SCRIPT EXISTS`` first, a second
round trip on every flush; here the script is loaded only when the server answers ``NOSCRIPT``
(first use, or after a restart), and only the calls it refused are sent again (a refused call ran
nothing; the rest of a pipeline may have run, if another client loaded the script meanwhile).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError


class ScriptBatcher:
    """Calls ``script`` like ``await batcher(keys, args)``, pipelining calls that arrive together."""

    def __init__(self, redis: Redis, script: AsyncScript, max_batch: int = 512) -> None:
        self._redis = redis
        self._script = script
        self._max_batch = max_batch
        self._pending: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every caller in this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await self._send(batch)
                refused = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
                if refused:  # only these: the others ran (another client may load it mid-batch)
                    await self._redis.script_load(self._script.script)
                    for i, result in zip(refused, await self._send([batch[i] for i in refused]), strict=True):
                        results[i] = result
            except Exception as exc:  # the connection failed: every caller in the batch sees it
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _send(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        """Each call's result or error, in order: one command alone, else one pipeline."""
        sha = self._script.sha
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await self._redis.evalsha(sha, len(keys), *keys, *args)]  # type: ignore[misc]
            except ResponseError as exc:
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results
