"""Redis clients whose commands hiredis packs: the same bytes as redis-py's, on every kind of URL."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from redis.asyncio import Connection

from aijobs.connections import PackedConnection, PackedSSLConnection, PackedUnixConnection, connect


class Color(enum.StrEnum):
    RED = "red"


ARGS = [
    ("SET", "k", "v"),
    ("EVALSHA", "abc", 2, "k1", "k2", 1.5, 0.1, 1795555239.4847267, 10**30, -3, "ü", b"\x00\xff", Color.RED),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", "maxmemory"),
    ("SET", "k", memoryview(b"view")),
]


@pytest.mark.parametrize("args", ARGS)
def test_packing_matches_redis_py(args: tuple[Any, ...]) -> None:
    assert b"".join(PackedConnection().pack_command(*args)) == b"".join(Connection().pack_command(*args))


def test_values_redis_py_refuses_are_still_refused() -> None:
    values: list[Any] = [True, None, object()]
    for value in values:
        with pytest.raises(Exception) as ours:
            PackedConnection().pack_command("SET", "k", value)
        with pytest.raises(Exception) as theirs:
            Connection().pack_command("SET", "k", value)
        assert type(ours.value) is type(theirs.value)


async def test_a_client_runs_commands_scripts_and_pipelines(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.set("packed:k", 1.25)
        assert await client.get("packed:k") == b"1.25"
        # Not INCRBYFLOAT: the bundled test Redis (6.2) corrupts its heap running it from Lua.
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert await script(keys=["packed:n"], args=[5]) == 5
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("packed:i")
            pipe.incr("packed:i")
            assert await pipe.execute() == [1, 2]
    finally:
        await client.delete("packed:k", "packed:n", "packed:i")
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "packed"),
    [
        ("redis://127.0.0.1:1/0", PackedConnection),
        ("rediss://127.0.0.1:1/0", PackedSSLConnection),
        ("unix:///tmp/redis.sock", PackedUnixConnection),
    ],
)
async def test_every_kind_of_url_gets_packed_connections(url: str, packed: type) -> None:
    client = connect(url)
    assert client.connection_pool.connection_class is packed
    await client.aclose()
