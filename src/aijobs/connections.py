"""Redis clients for the long-lived processes, with commands packed in C by hiredis.

redis-py packs each command in Python, one growing buffer per argument; a job's record and ledger
script carries dozens of arguments, and packing it cost more CPU than the upstream call it
recorded. hiredis (already installed for parsing replies) packs the same bytes in a fraction of
the time: floats round-trip exactly, and an unsupported value (a bool, say) is still refused.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Connection, Redis


class PackedConnection(Connection):
    """A connection that packs commands with ``hiredis.pack_command``."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a first argument like "SCRIPT LOAD" is two words of the command.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # memoryviews and the like: redis-py's own packing takes them
            return super().pack_command(*args)


def connect(url: str, **options: Any) -> Redis:
    """A client for ``url`` (as ``Redis.from_url``) whose connections pack with hiredis."""
    client: Redis = Redis.from_url(url, connection_class=PackedConnection, **options)
    return client
