"""The upstream client over raw loopback servers: bodies as sent, and each failure as httpx2's error."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from aijobs.embedded_redis import free_port
from aijobs.providers.transport import upstream_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away first
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
    writer.write(head.encode() + b"\r\n\r\n" + body)
    await writer.drain()


def replying(head: str, body: bytes, close: bool = False) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            await answer(writer, head, body)
            if close:
                return

    return handler


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with upstream_client() as http:
        yield http


async def test_a_body_sent_and_a_gzipped_answer_decoded_once(client: httpx2.AsyncClient) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        seen.append(head + await reader.readexactly(length))
        packed = gzip.compress(b'{"ok": true}')
        await answer(
            writer, f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}", packed
        )

    server, url = await serve(handler)
    async with server:
        response = await client.post(url + "/v1/x", json={"a": 1}, headers={"Authorization": "Bearer k"})
    assert response.json() == {"ok": True}
    assert seen[0].endswith(b'{"a":1}') and b"authorization: bearer k" in seen[0].lower()


async def test_redirects_are_httpx2s_to_follow_not_the_transports(client: httpx2.AsyncClient) -> None:
    server, url = await serve(
        replying("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0", b"")
    )
    async with server:
        response = await client.get(url + "/v1/x")
    assert response.status_code == 302


async def test_a_streamed_answer_arrives_in_pieces(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for line in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(handler)
    async with server, client.stream("GET", url + "/events") as response:
        lines = [line async for line in response.aiter_lines() if line]
    assert lines == ["data: 1", "data: 2"]


async def test_a_refused_connection_is_a_connect_error(client: httpx2.AsyncClient) -> None:
    with pytest.raises(httpx2.ConnectError):
        await client.get(f"http://127.0.0.1:{free_port()}/")


async def test_no_answer_in_time_is_a_read_timeout(client: httpx2.AsyncClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await serve(silent)
    async with server:
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(url + "/", timeout=httpx2.Timeout(0.2, connect=1))


async def test_a_body_cut_short_is_a_protocol_error(client: httpx2.AsyncClient) -> None:
    server, url = await serve(replying("HTTP/1.1 200 OK\r\nContent-Length: 100", b"only ten b", close=True))
    async with server:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(url + "/")


async def test_a_connection_dropped_before_the_answer_is_a_protocol_error(client: httpx2.AsyncClient) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    server, url = await serve(hang_up)
    async with server:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(url + "/")
