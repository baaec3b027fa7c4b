"""Script calls made together share one pipeline, yet each gets its own result or error."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from aijobs.scriptbatch import ScriptBatcher

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def unknown_script() -> str:
    """INCR_BY as a script this Redis has never seen (not SCRIPT FLUSH: the test Redis, 6.2, has
    crashed in Lua's collector after one)."""
    return f"{INCR_BY} -- {uuid.uuid4()}"


async def test_concurrent_calls_each_get_their_own_result_and_error(redis: Redis) -> None:
    batcher = ScriptBatcher(redis, redis.register_script(INCR_BY), max_batch=7)
    key, wrong_type = f"n:{uuid.uuid4()}", f"list:{uuid.uuid4()}"
    await redis.rpush(wrong_type, "x")  # type: ignore[misc]
    calls = [batcher([key], [1]) for _ in range(20)] + [batcher([wrong_type], [1])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 21))
    assert isinstance(results[-1], ResponseError)
    assert "WRONGTYPE" in str(results[-1])


async def test_a_script_unknown_to_the_server_is_loaded_on_first_use(redis: Redis) -> None:
    batcher = ScriptBatcher(redis, redis.register_script(unknown_script()))
    assert await batcher([f"n:{uuid.uuid4()}"], [5]) == 5


async def test_a_dead_connection_fails_every_waiting_call(redis_url: str) -> None:
    broken = Redis.from_url(redis_url.replace(redis_url.rsplit(":", 1)[1], "1/0"), socket_connect_timeout=0.5)
    batcher = ScriptBatcher(broken, broken.register_script(INCR_BY))
    results = await asyncio.gather(*(batcher(["k"], [1]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await broken.aclose()


async def test_after_a_partial_noscript_only_the_refused_calls_are_sent_again(redis: Redis) -> None:
    class LoadedMidBatch(ScriptBatcher):
        """The first pipeline's second half arrives after another client has loaded the script."""

        first = True

        async def _send(self, batch: list[Any]) -> list[Any]:
            if not self.first:
                return await super()._send(batch)
            self.first, half = False, len(batch) // 2
            refused = await super()._send(batch[:half])
            await redis.script_load(self._script.script)
            return refused + await super()._send(batch[half:])

    batcher = LoadedMidBatch(redis, redis.register_script(unknown_script()))
    key = f"n:{uuid.uuid4()}"
    results = await asyncio.gather(*(batcher([key], [1]) for _ in range(10)))
    assert sorted(results) == list(range(1, 11))
    assert int(await redis.get(key)) == 10  # each call ran exactly once
