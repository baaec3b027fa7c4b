"""Redis clients for the long-lived processes, with commands packed in C by hiredis.

redis-py packs each command in Python, one growing buffer per argument; a job's record and ledger
script carries dozens of arguments, and packing it cost more CPU than the upstream call it
recorded. hiredis (already installed for parsing replies) packs the same bytes in a fraction of
the time: floats round-trip exactly, and an unsupported value (a bool, say) is still refused.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Connection, ConnectionPool, Redis, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.connection import AbstractConnection


class _Packing:
    """Mixed into a redis-py connection class: commands packed with ``hiredis.pack_command``."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a first argument like "SCRIPT LOAD" is two words of the command.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a bytearray, say: redis-py's own packing takes it (or refuses it as before)
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


class PackedConnection(_Packing, Connection):
    """TCP (``redis://``)."""


class PackedSSLConnection(_Packing, SSLConnection):
    """TLS (``rediss://``)."""


class PackedUnixConnection(_Packing, UnixDomainSocketConnection):
    """A Unix socket (``unix://``)."""


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
    UnixDomainSocketConnection: PackedUnixConnection,
}


def connect(url: str, **options: Any) -> Redis:
    """A client for ``url`` (as ``Redis.from_url``) whose connections pack with hiredis."""
    pool = ConnectionPool.from_url(url, **options)
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    client: Redis = Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool
    return client
