"""A minimal HTTP/1.1 load generator over keep-alive connections (asyncio streams).

General-purpose clients spend about a millisecond of CPU per request in Python, which on a 2-core
machine would measure the client, not the server. This one writes prepared request bytes and reads
responses by Content-Length, nothing more. Latency is measured from each request's scheduled time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Sample:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)


def request_bytes(url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


async def open_loop(url: str, raw: bytes, rate_per_s: float, count: int, connections: int = 256) -> Sample:
    """Send ``count`` requests at ``rate_per_s`` on a pool of keep-alive connections."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(url))
    sample = Sample()
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        scheduled = start + i / rate_per_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        connection = await pool.get()
        status, body = await connection.send(raw)
        pool.put_nowait(connection)
        sample.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        sample.statuses[status] = sample.statuses.get(status, 0) + 1
        sample.bodies.append(body)

    await asyncio.gather(*(one(i) for i in range(count)))
    while not pool.empty():
        pool.get_nowait().close()
    return sample


async def closed_loop(url: str, raw: bytes, count: int, concurrency: int) -> tuple[Sample, float]:
    """``count`` requests from ``concurrency`` senders, each waiting for its answer; returns elapsed s."""
    sample = Sample()
    remaining = count

    async def sender() -> None:
        nonlocal remaining
        connection = await Connection.open(url)
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            status, body = await connection.send(raw)
            sample.latencies_ms.append((time.perf_counter() - sent) * 1000)
            sample.statuses[status] = sample.statuses.get(status, 0) + 1
            sample.bodies.append(body)
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return sample, time.perf_counter() - started
