"""A webhook receiver on loopback, for tests: records every request and answers as scripted.

It runs uvicorn in its own thread (and event loop), so a test can block or await as it likes. Each
path answers from its script first (``answer(path, Answer(500), ...)``), then with its default
(``always(path, Answer(410))``), else 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from aijobs.embedded_redis import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    host: str
    port: int
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    defaults: dict[str, Answer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(answers)

    def always(self, path: str, answer: Answer) -> None:
        with self.lock:
            self.defaults[path] = answer

    def received(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout_s: float = 10.0) -> list[Received]:
        """The first ``count`` requests to ``path``, waiting up to ``timeout_s`` for them."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.received(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(found)} requests within {timeout_s} s, wanted {count}")
            await asyncio.sleep(0.02)
        return found

    def _next(self, path: str) -> Answer:
        with self.lock:
            script = self.scripts.get(path)
            if script:
                return script.pop(0)
            return self.defaults.get(path, Answer())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.requests.append(Received(scope["path"], headers, body, time.time()))
        answer = self._next(scope["path"])
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        raw = [(k.encode(), v.encode()) for k, v in answer.headers] + [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def running_receiver(host: str = "127.0.0.2") -> Iterator[Receiver]:
    """A receiver listening on ``host`` (any 127/8 address works on Linux) until the block ends."""
    receiver = Receiver(host, free_port())
    config = uvicorn.Config(receiver, host=host, port=receiver.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the webhook receiver did not start")
        time.sleep(0.02)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
