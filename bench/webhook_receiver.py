"""``python -m bench.webhook_receiver PORT DELAY_S``: a slow webhook receiver (tests/fakes/receiver).

A TEST FAKE: answers every POST with 200 after ``DELAY_S`` seconds and notes when each arrived.
``GET /_stats`` returns ``[[arrived_at, event_timestamp], ...]`` so the bench can report delivery
throughput and latency (event written → request received). Its own process: it shares no CPU
with the worker under measurement beyond the machine's.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import orjson
import uvicorn
from tests.fakes.receiver import Answer, Receiver


def main() -> None:
    port, delay_s = int(sys.argv[1]), float(sys.argv[2])
    receiver = Receiver("127.0.0.1", port)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != "/_stats":
            await receiver(scope, receive, send)
            return
        with receiver.lock:
            rows = [[r.at, _event_at(r.body)] for r in receiver.requests]
        body = orjson.dumps(rows)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    receiver.always("/hook", Answer(200, delay_s=delay_s))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def _event_at(body: bytes) -> float:
    return datetime.fromisoformat(orjson.loads(body)["timestamp"]).timestamp()


if __name__ == "__main__":
    main()
