"""Stored blobs as HTTP bodies: a blob that has gone (a bucket lifecycle rule, say) is an error
answer before the first byte, never a broken body."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from fastapi.responses import StreamingResponse

from aijobs.errors import StorageError
from aijobs.storage import BlobNotFound, BlobStore


async def opened(blobs: BlobStore, key: str, what: str) -> tuple[bytes, AsyncIterator[bytes]]:
    """The blob's first chunk (empty for an empty blob) and the rest; :class:`StorageError` (a 503)
    naming ``what`` if it is gone."""
    chunks = blobs.read(key)
    try:
        return await anext(chunks, b""), chunks
    except BlobNotFound:
        raise StorageError(f"{what} is no longer in the store") from None


async def whole(blobs: BlobStore, key: str, what: str) -> bytes:
    first, rest = await opened(blobs, key, what)
    return first + b"".join([chunk async for chunk in rest])


async def streamed(
    blobs: BlobStore, key: str, what: str, media_type: str, headers: Mapping[str, str]
) -> StreamingResponse:
    """The blob as a response body, opened before the response starts."""
    first, rest = await opened(blobs, key, what)
    return StreamingResponse(_chain(first, rest), media_type=media_type, headers=dict(headers))


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
