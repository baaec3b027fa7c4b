"""The floor for (g): the same server stack doing only what any gateway call must. A reference, not aijobs.

A raw ASGI app under uvicorn (uvloop, httptools, as ``aijobs api`` runs) that forwards the request
body to the upstream over an aiohttp pool, writes the answer to Redis with one ``EVALSHA`` (the
smallest durable record), and returns it. No auth, routing, validation or ledger. What aijobs adds
above this line is its own work; what this adds above the upstream called directly is the cost of
one more HTTP hop, one upstream call and one Redis write in Python.
``python -m bench.chat_floor PORT UPSTREAM_URL REDIS_URL``
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn

from aijobs.api.limits import read_body
from aijobs.connections import connect

_RECORD = "redis.call('HSET', KEYS[1], 'answer', ARGV[1]) redis.call('EXPIRE', KEYS[1], 60) return 1"


class Floor:
    """The ASGI app (see the module docstring)."""

    def __init__(self, upstream_url: str, redis_url: str) -> None:
        self.url = upstream_url + "/v1/chat/completions"
        self.redis_url = redis_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = await read_body(scope, receive, max_bytes=1 << 20)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer floor"}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            answer = await response.read()
        await self.redis.evalsha(self.sha, 1, "floor:answer", answer)  # type: ignore[misc,arg-type]
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": answer})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while (await receive())["type"] == "lifespan.startup":
            self.session = aiohttp.ClientSession()
            self.redis = connect(self.redis_url)
            self.sha = await self.redis.script_load(_RECORD)
            await send({"type": "lifespan.startup.complete"})
        await self.session.close()
        await self.redis.aclose()
        await send({"type": "lifespan.shutdown.complete"})


if __name__ == "__main__":
    port, upstream, redis_url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(
        Floor(upstream, redis_url), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        proxy_headers=False, access_log=False, log_level="warning",
    )  # fmt: skip
