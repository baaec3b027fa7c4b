"""Media outputs into the BlobStore, the moment they exist: bytes in hand, or streamed from the provider.

Provider result URLs expire (BFL's in ~10 minutes, Ark's in a day) or need our key (Veo), so every
output is copied at once and users only ever get our signed URLs. A download streams straight into
the store (multipart for large objects), hashed and counted on the way and cut off past
``max_bytes``; it never sits whole in memory.

An image's ``width`` and ``height`` are read from the bytes stored (their first ``SNIFF_BYTES``, kept
as they stream past: enough for any format's header), never taken from the request or the provider's
word, which can differ from what it made; an image that cannot be read has none. Other media keep
what the adapter said. ::

    store_outputs(...)  → one blob dict per output (key, content_type, bytes, sha256, width, height,
                          duration_s), or raises — having deleted what it already stored:
    ├── the provider's file is gone (403/404/410)      → ProviderUnavailable (not retried: expired)
    ├── the download failed (5xx, transport)            → OutputDownloadFailed (try again later)
    ├── the file is larger than max_bytes               → StorageError
    └── the store failed                                → StorageError
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
from PIL import Image

from aijobs.errors import ProviderUnavailable, StorageError
from aijobs.storage import BlobStore, BlobTooLarge, StoredBlob
from aijobs.types.common import Media, RemoteFile

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES = 256 * 1024
#: How much of a streamed image is kept to read its size: a JPEG's EXIF and ICC segments come first.
SNIFF_BYTES = 1024 * 1024
_GONE = frozenset({401, 403, 404, 410})
_EXTENSIONS = {
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "image/png": "png",
    "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif", "audio/mpeg": "mp3", "audio/wav": "wav",
    "audio/x-wav": "wav", "audio/flac": "flac", "audio/ogg": "ogg", "audio/aac": "aac", "audio/pcm": "pcm",
}  # fmt: skip


class OutputDownloadFailed(ProviderUnavailable):
    """Downloading a provider's output failed in a way worth trying again (5xx, a dropped connection)."""


async def store_outputs(
    blobs: BlobStore,
    http: httpx2.AsyncClient,
    key_prefix: str,
    items: Sequence[Media | RemoteFile],
    *,
    max_bytes: int,
    provider: str = "",
    model: str = "",
) -> list[dict[str, Any]]:
    """Store each of ``items`` under ``{key_prefix}/{i}.{ext}``; their blob dicts, in order."""
    stored: list[dict[str, Any]] = []
    try:
        for i, item in enumerate(items):
            stored.append(
                await _store_one(blobs, http, f"{key_prefix}/{i}", item, max_bytes, provider, model)
            )
    except BaseException:
        for blob in stored:  # all or nothing: a half-copied result is not a result
            try:
                await blobs.delete(blob["key"])
            except Exception:
                log.warning("could not delete %s after a failed copy", blob["key"], exc_info=True)
        raise
    return stored


async def _store_one(
    blobs: BlobStore,
    http: httpx2.AsyncClient,
    key_base: str,
    item: Media | RemoteFile,
    max_bytes: int,
    provider: str,
    model: str,
) -> dict[str, Any]:
    head = _Head()
    try:
        if isinstance(item, Media):
            blob = await _put(blobs, f"{key_base}.{item.extension}", item.data, item.content_type, max_bytes)
            head.keep(item.data)
        else:
            blob = await _download(blobs, http, key_base, item, max_bytes, provider, model, head)
    except BlobTooLarge:
        raise StorageError(
            f"an output is larger than the {max_bytes}-byte limit (AIJOBS_MAX_OUTPUT_BYTES)"
        ) from None
    view: dict[str, Any] = blob.to_dict()
    names = ["duration_s"]
    if blob.content_type.startswith("image/"):
        size = image_size(head.data())
        if size is not None:
            view["width"], view["height"] = size
    else:
        names += ["width", "height"]
    for name in names:
        if getattr(item, name) is not None:
            view[name] = getattr(item, name)
    return view


class _Head:
    """The first ``SNIFF_BYTES`` of an output, kept as its chunks go by."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def keep(self, chunk: bytes) -> None:
        if self._size < SNIFF_BYTES:
            part = chunk[: SNIFF_BYTES - self._size]
            self._parts.append(part)
            self._size += len(part)

    async def tee(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.keep(chunk)
            yield chunk

    def data(self) -> bytes:
        return b"".join(self._parts)


def image_size(head: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an image's first bytes (its header: nothing is decoded), or ``None``
    when they are not an image Pillow can read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the size is read
        try:
            with Image.open(io.BytesIO(head)) as image:
                width, height = image.size
        except Exception:  # any failure to parse untrusted bytes (each plugin raises its own)
            return None
    return (width, height) if width > 0 and height > 0 else None


async def _put(
    blobs: BlobStore, key: str, data: bytes | AsyncIterator[bytes], content_type: str, max_bytes: int
) -> StoredBlob:
    try:
        return await blobs.put(key, data, content_type, max_bytes=max_bytes)
    except (BlobTooLarge, ProviderUnavailable):
        raise
    except Exception as exc:
        log.exception("storing %s failed", key)
        raise StorageError(f"could not store an output: {type(exc).__name__}") from exc


async def _download(
    blobs: BlobStore,
    http: httpx2.AsyncClient,
    key_base: str,
    item: RemoteFile,
    max_bytes: int,
    provider: str,
    model: str,
    head: _Head,
) -> StoredBlob:
    try:
        async with http.stream("GET", item.url, headers=dict(item.headers)) as response:
            if response.status_code in _GONE:
                raise ProviderUnavailable(
                    f"{provider}'s output is gone (HTTP {response.status_code}); its URL may have expired",
                    provider=provider, model=model, status=response.status_code,
                )  # fmt: skip
            if response.status_code >= 400:
                raise OutputDownloadFailed(
                    f"downloading {provider}'s output failed: HTTP {response.status_code}",
                    provider=provider, model=model, status=response.status_code,
                )  # fmt: skip
            content_type = item.content_type or _content_type(response)
            extension = item.extension or _EXTENSIONS.get(content_type, "bin")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise BlobTooLarge(f"{declared} bytes")
            chunks: AsyncIterator[bytes] = response.aiter_bytes(DOWNLOAD_CHUNK_BYTES)
            if content_type.startswith("image/"):
                chunks = head.tee(chunks)
            return await _put(blobs, f"{key_base}.{extension}", chunks, content_type, max_bytes)
    except httpx2.HTTPError as exc:
        raise OutputDownloadFailed(
            f"downloading {provider}'s output failed: {type(exc).__name__}", provider=provider, model=model
        ) from None


def _content_type(response: httpx2.Response) -> str:
    value = response.headers.get("content-type", "application/octet-stream")
    return value.split(";")[0].strip().lower() or "application/octet-stream"
