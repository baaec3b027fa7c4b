"""The BlobStore contract: the protocol both backends implement, and what they share.

A put streams (hashing and counting as bytes arrive, never joining them all in memory), enforces a
size limit mid-stream and leaves nothing behind when it fails. Keys look like ``tenant/job_id/0.png``;
:func:`check_key` rejects anything that could escape a directory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

MAX_KEY_CHARS = 512
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum for every multipart part but the last
READ_CHUNK_BYTES = 256 * 1024
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob as stored: what a job record keeps about one media output."""

    key: str
    content_type: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "content_type": self.content_type,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


class BlobTooLarge(Exception):
    """A put exceeded its ``max_bytes``; nothing was stored."""


class BlobNotFound(Exception):
    """No blob is stored under the key."""


class BlobStore(Protocol):
    """Media object storage. Every method raises ``ValueError`` for a key :func:`check_key` rejects."""

    async def put(
        self, key: str, data: bytes | AsyncIterable[bytes], content_type: str, *, max_bytes: int | None = None
    ) -> StoredBlob:
        """Store ``data`` under ``key``, replacing any blob there; BlobTooLarge once past ``max_bytes``."""
        ...

    async def signed_url(self, key: str, ttl_s: int) -> str:
        """A URL anyone holding it can GET the blob from, for ``ttl_s`` seconds."""
        ...

    def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset`` on, in chunks; raises BlobNotFound before yielding anything."""
        ...

    async def stat(self, key: str) -> tuple[int, str]:
        """``(size in bytes, content type)``, or BlobNotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing key is not an error."""
        ...

    async def check(self) -> None:
        """Readiness probe: raise if the backend cannot store blobs."""
        ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path of ``[A-Za-z0-9._/-]``, else raise ValueError.

    No segment may be empty or start with a dot: that rules out ``.``/``..`` traversal, absolute paths
    and hidden names, which :class:`LocalStore` reserves for its own sidecar and temporary files.
    """
    if not key or len(key) > MAX_KEY_CHARS or not _KEY_CHARS.fullmatch(key):
        raise ValueError(f"invalid blob key {key[:80]!r}")
    if any(not segment or segment.startswith(".") for segment in key.split("/")):
        raise ValueError(f"invalid blob key {key[:80]!r}")
    return key


def check_content_type(content_type: str) -> None:
    # It becomes an HTTP header on the way out; control characters would let it forge others.
    if not content_type or not content_type.isascii() or not content_type.isprintable():
        raise ValueError(f"invalid content type {content_type[:80]!r}")


async def chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    async for chunk in data:
        if chunk:
            yield chunk


class Digest:
    """Size and sha256 of a stream so far; raises BlobTooLarge as soon as the size passes the limit."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sha256 = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise BlobTooLarge(f"blob exceeds {self.max_bytes} bytes")
        self._sha256.update(chunk)

    def blob(self, key: str, content_type: str) -> StoredBlob:
        return StoredBlob(key, content_type, self.bytes, self._sha256.hexdigest())
