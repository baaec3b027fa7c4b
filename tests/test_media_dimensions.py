"""An image's width and height come from the file stored, not from the size the caller asked for.

A provider fake speaks OpenAI's ``/images/generations`` and answers with images of another size than
asked (as real vendors do when they round or ignore ``size``), as base64 and as URLs to download; the
OpenAI adapter turns the answer into outputs and :func:`store_outputs` stores them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from PIL import Image

from aijobs.media import DOWNLOAD_CHUNK_BYTES, image_size, store_outputs
from aijobs.providers.openai_media import OpenAIImage
from aijobs.storage import LocalStore
from aijobs.types.common import Media
from aijobs.types.image import ImageInput
from tests.providers.tasks_helpers import context

MAX_BYTES = 16 * 1024 * 1024


def picture(fmt: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, fmt)
    return out.getvalue()


def padded_jpeg(size: tuple[int, int], padding: int) -> bytes:
    """A JPEG whose size (its SOF marker) comes after ``padding`` bytes of comment segments, as a
    camera's EXIF and ICC profile put it: past the first download chunk."""
    plain = picture("JPEG", size)
    segments = b""
    while len(segments) < padding:
        body = b"x" * 60_000
        segments += b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body
    return plain[:2] + segments + plain[2:]


Route = Callable[[], tuple[str, bytes]]


@asynccontextmanager
async def provider_fake(routes: dict[str, Route]) -> AsyncIterator[str]:
    """An HTTP server answering ``METHOD /path`` with (content type, body); yields its base URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, path = head.split(" ", 2)[:2]
        length = next(
            (
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        content_type, body = routes[f"{method} {path}"]()
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blobs", "http://blobs.test", b"0123456789abcdef0123")


async def generate(base: str, request: ImageInput, blobs: LocalStore) -> list[dict[str, Any]]:
    """Run ``request`` on the OpenAI adapter aimed at the fake at ``base``; store what it made."""
    async with httpx2.AsyncClient(timeout=10) as http:
        result = await OpenAIImage(context(http, "openai", base + "/v1")).run("dall-e-2", request)
        return await store_outputs(
            blobs, http, "t/job_1", result.items, max_bytes=MAX_BYTES, provider="openai", model="dall-e-2"
        )


async def test_an_images_size_is_the_one_the_provider_made_not_the_one_asked(blobs: LocalStore) -> None:
    made_png, made_jpeg = picture("PNG", (300, 200)), padded_jpeg((640, 360), 3 * DOWNLOAD_CHUNK_BYTES // 2)
    assert made_jpeg.index(b"\xff\xc0") > DOWNLOAD_CHUNK_BYTES  # the size is not in the first chunk

    def generations() -> tuple[str, bytes]:
        rows = [{"b64_json": base64.b64encode(made_png).decode()}, {"url": base + "/files/1.jpg"}]
        return "application/json", orjson.dumps({"created": 1, "data": rows})

    routes: dict[str, Route] = {
        "POST /v1/images/generations": generations,
        "GET /files/1.jpg": lambda: ("image/jpeg", made_jpeg),
    }
    async with provider_fake(routes) as base:
        stored = await generate(base, ImageInput(prompt="a fox", n=2, size="1024x1024"), blobs)

    assert [(b["content_type"], b["width"], b["height"]) for b in stored] == [
        ("image/png", 300, 200),
        ("image/jpeg", 640, 360),
    ]
    assert stored[1]["bytes"] == len(made_jpeg)  # stored whole, sniffed on the way


async def test_an_image_that_cannot_be_read_has_no_size_rather_than_the_requested_one(
    blobs: LocalStore,
) -> None:
    not_a_picture = b"<html>sorry</html>" * 10

    def generations() -> tuple[str, bytes]:
        rows = [{"b64_json": base64.b64encode(not_a_picture).decode()}, {"url": base + "/files/2.png"}]
        return "application/json", orjson.dumps({"created": 1, "data": rows})

    routes: dict[str, Route] = {
        "POST /v1/images/generations": generations,
        "GET /files/2.png": lambda: ("image/png", not_a_picture),
    }
    async with provider_fake(routes) as base:
        stored = await generate(base, ImageInput(prompt="a fox", n=2, size="512x512"), blobs)

    assert len(stored) == 2
    for blob in stored:
        assert blob["content_type"] == "image/png" and blob["bytes"] == len(not_a_picture)
        assert "width" not in blob and "height" not in blob


async def test_other_media_keep_the_size_the_adapter_gave(blobs: LocalStore) -> None:
    video = Media(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4", "mp4", 1280, 720, 5.0)
    gif = Media(picture("GIF", (96, 64)), "image/gif", "gif", width=480, height=270, duration_s=2.0)
    async with httpx2.AsyncClient() as http:
        stored = await store_outputs(blobs, http, "t/job_3", [video, gif], max_bytes=MAX_BYTES)
    assert [(b["width"], b["height"], b["duration_s"]) for b in stored] == [(1280, 720, 5.0), (96, 64, 2.0)]


def test_image_size_reads_headers_only() -> None:
    assert image_size(picture("WEBP", (123, 45))) == (123, 45)
    assert image_size(picture("PNG", (70, 80))[:64]) == (70, 80)  # a header is enough
    assert image_size(b"") is None
    assert image_size(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10) is None
