"""The upstream client over raw loopback servers: bodies as sent, and each failure as httpx2's error."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx2
import pytest

from aijobs.embedded_redis import free_port
from aijobs.providers.transport import Upstream, exchange, upstream_client

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


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with upstream_client() as http:
        yield http


def headed(handler_head: list[bytes]) -> Handler:
    """Answers a small JSON body, keeping each request's head (and body) in ``handler_head``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            length = int({k.lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
            handler_head.append(head + await reader.readexactly(length))
            packed = gzip.compress(b'{"ok": true}')
            await answer(
                writer, f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}", packed
            )

    return handler


async def test_a_whole_exchange_straight_to_the_pool(upstream: Upstream) -> None:
    seen: list[bytes] = []
    server, url = await serve(headed(seen))
    async with server:
        got = await exchange(
            upstream, "POST", url + "/v1/x?sig=a%2Fb", content=b'{"a":1}', headers={"X-Key": "k"},
            timeouts=httpx2.Timeout(5),
        )  # fmt: skip
    assert got.status_code == 200 and got.content == b'{"ok": true}'  # decompressed once
    assert seen[0].startswith(b"POST /v1/x?sig=a%2Fb ") and seen[0].endswith(b'{"a":1}')
    assert b"x-key: k" in seen[0].lower()


async def test_exchange_errors_are_httpx2s(upstream: Upstream) -> None:
    with pytest.raises(httpx2.ConnectError):
        await exchange(upstream, "GET", f"http://127.0.0.1:{free_port()}/", content=None, headers={},
                       timeouts=httpx2.Timeout(1))  # fmt: skip

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await serve(silent)
    async with server:
        with pytest.raises(httpx2.ReadTimeout):
            await exchange(upstream, "GET", url, content=None, headers={}, timeouts=httpx2.Timeout(0.2))
        with pytest.raises(httpx2.LocalProtocolError):  # a key read from a file with its newline
            await exchange(upstream, "GET", url, content=None, headers={"Authorization": "Bearer k\n"},
                           timeouts=httpx2.Timeout(1))  # fmt: skip


async def test_signed_urls_and_streamed_bodies_go_as_httpx2_built_them(client: httpx2.AsyncClient) -> None:
    seen: list[bytes] = []

    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    server, url = await serve(headed(seen))
    async with server:
        await client.get(url + "/o/a%2Fb?X-Amz-Signature=%7Eabc")
        await client.post(url + "/upload", content=parts())
    assert seen[0].startswith(b"GET /o/a%2Fb?X-Amz-Signature=%7Eabc ")
    assert b"transfer-encoding" not in seen[1].lower() and seen[1].endswith(b"one,two")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``img.test`` and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=img.test",
         "-addext", "subjectAltName=DNS:img.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_names_the_host_the_guard_checked(certificate: tuple[Path, Path]) -> None:
    """The outbound guard connects to a pinned address and names the host for TLS (SNI, certificate)."""
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trust = ssl.create_default_context(cafile=str(cert))
    server = await asyncio.start_server(
        replying("HTTP/1.1 200 OK\r\nContent-Length: 2", b"ok", close=True), "127.0.0.1", 0, ssl=server_side
    )
    port = server.sockets[0].getsockname()[1]
    async with server, Upstream(trust=trust) as http:
        with pytest.raises(httpx2.ConnectError):  # the address alone does not match the certificate
            await http.get(f"https://127.0.0.1:{port}/a.png")
        pinned = await http.get(
            f"https://127.0.0.1:{port}/a.png",
            headers={"Host": "img.test"},
            extensions={"sni_hostname": "img.test"},
        )
    assert pinned.status_code == 200 and pinned.content == b"ok"
