"""Uploaded files (``POST /v1/files``): bytes in the BlobStore, a small record in Redis.

An image input (``input.image``) may name an uploaded file by its id instead of a URL; the worker
reads it from the store, so no provider ever needs to reach us. A file belongs to the tenant that
uploaded it and expires after ``file_ttl_s`` (the record with a TTL; the blob is deleted with it
when removed through the API, else left for a bucket lifecycle rule).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable
from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis

from aijobs.keys import Keys
from aijobs.storage import BlobStore

FILE_ID_PREFIX = "file_"
#: Leading bytes of the image types an input image may have.
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def sniff_image(head: bytes) -> str | None:
    """The image content type ``head`` (a file's first bytes) starts, or ``None`` for anything else."""
    for signature, content_type in IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    tenant: str
    purpose: str
    filename: str
    content_type: str
    bytes: int
    sha256: str
    created_at: float
    expires_at: float
    #: A batch input file's number of requests, and the endpoint they call.
    lines: int | None = None
    endpoint: str | None = None

    @property
    def key(self) -> str:
        return f"files/{self.tenant}/{self.id}"

    def view(self) -> dict[str, object]:
        """The public file object (OpenAI's shape, plus our content type and hash)."""
        return {
            "id": self.id, "object": "file", "purpose": self.purpose, "filename": self.filename,
            "bytes": self.bytes, "content_type": self.content_type, "sha256": self.sha256,
            "created_at": int(self.created_at), "expires_at": int(self.expires_at),
        } | ({"lines": self.lines} if self.lines is not None else {})  # fmt: skip


def new_file_id() -> str:
    return FILE_ID_PREFIX + os.urandom(12).hex()


def is_file_id(text: str) -> bool:
    return (
        text.startswith(FILE_ID_PREFIX) and len(text) == 29 and all(c in "0123456789abcdef" for c in text[5:])
    )


class Files:
    """File records in Redis (``aijobs:file:{id}``) over blobs in the BlobStore."""

    def __init__(self, redis: Redis, blobs: BlobStore, ttl_s: int) -> None:
        self.redis = redis
        self.blobs = blobs
        self.ttl_s = ttl_s

    async def save(self, record: FileRecord) -> None:
        await self.redis.set(Keys.file(record.id), orjson.dumps(asdict(record)), ex=self.ttl_s)

    async def store(
        self,
        tenant: str,
        purpose: str,
        filename: str,
        data: bytes | AsyncIterable[bytes],
        content_type: str,
        *,
        max_bytes: int | None = None,
        lines: int | None = None,
        endpoint: str | None = None,
    ) -> FileRecord:
        """Put ``data`` in the BlobStore as a new file of ``tenant``'s; its record, saved.

        ``BlobTooLarge`` once past ``max_bytes`` (nothing is kept then)."""
        file_id, now = new_file_id(), time.time()
        blob = await self.blobs.put(f"files/{tenant}/{file_id}", data, content_type, max_bytes=max_bytes)
        record = FileRecord(
            file_id, tenant, purpose, filename, content_type, blob.bytes, blob.sha256, now, now + self.ttl_s,
            lines, endpoint,
        )  # fmt: skip
        await self.save(record)
        return record

    async def get(self, file_id: str, tenant: str) -> FileRecord | None:
        """The tenant's file, or ``None`` (missing, expired, or someone else's)."""
        if not is_file_id(file_id):
            return None
        raw = await self.redis.get(Keys.file(file_id))
        if raw is None:
            return None
        record = FileRecord(**orjson.loads(raw))
        return record if record.tenant == tenant else None

    async def read(self, record: FileRecord) -> bytes:
        return b"".join([chunk async for chunk in self.blobs.read(record.key)])

    async def delete(self, record: FileRecord) -> None:
        await self.redis.delete(Keys.file(record.id))
        await self.blobs.delete(record.key)
