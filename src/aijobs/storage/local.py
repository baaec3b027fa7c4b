"""``LocalStore``: blobs as files under a root directory, for development and single-host deployments.

Its URLs point at this service (``/v1/blobs/{key}``), which checks their HMAC with
:meth:`LocalStore.verify`. Writes go to a temporary file that is renamed into place, so a reader
never sees half a blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO

from aijobs.storage.blob import (
    READ_CHUNK_BYTES,
    BlobNotFound,
    Digest,
    StoredBlob,
    check_content_type,
    check_key,
    chunks,
)

_INLINE_WRITE_BYTES = 64 * 1024  # smaller writes only touch the page cache; not worth a thread hop


class LocalStore:
    """Blobs as files under ``root``; the content type sits in a hidden sidecar ``.{name}.meta``.

    A put writes a temporary file in the blob's directory and renames it into place, so a reader sees
    the old blob or the new one, never part of one. The sidecar is renamed in first: the data file's
    presence is what makes a blob exist.
    """

    def __init__(self, root: Path, base_url: str, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self.root = root
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file holding the blob under ``key`` (which need not exist); ValueError for a bad key."""
        return self.root / check_key(key)

    async def put(
        self, key: str, data: bytes | AsyncIterable[bytes], content_type: str, *, max_bytes: int | None = None
    ) -> StoredBlob:
        path = self.path_for(key)
        check_content_type(content_type)
        digest = Digest(max_bytes)
        file, tmp = await asyncio.to_thread(_open_temp, path)
        try:
            async for chunk in chunks(data):
                digest.add(chunk)
                if len(chunk) > _INLINE_WRITE_BYTES:
                    await asyncio.to_thread(file.write, chunk)
                else:
                    file.write(chunk)
            blob = digest.blob(key, content_type)
            await asyncio.to_thread(_commit, file, tmp, path, blob)
        except BaseException:
            file.close()
            tmp.unlink(missing_ok=True)
            raise
        return blob

    async def signed_url(self, key: str, ttl_s: int) -> str:
        check_key(key)
        expires = int(time.time()) + ttl_s
        return f"{self.base_url}/v1/blobs/{key}?expires={expires}&sig={self._sign(key, expires)}"

    def verify(self, key: str, expires: int, sig: str, now_s: float | None = None) -> bool:
        """Whether ``sig`` is this store's signature for ``key`` until ``expires`` and that is not past."""
        if (time.time() if now_s is None else now_s) > expires:
            return False
        try:
            expected = self._sign(check_key(key), expires)
        except ValueError:
            return False
        return hmac.compare_digest(expected.encode(), sig.encode())

    def _sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        try:
            if offset:
                await asyncio.to_thread(file.seek, offset)
            while chunk := await asyncio.to_thread(file.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            file.close()

    async def stat(self, key: str) -> tuple[int, str]:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(_stat, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        # Empty directories are left behind: removing them would race a concurrent put into them.
        await asyncio.to_thread(_unlink_blob, path)

    async def check(self) -> None:
        await asyncio.to_thread(_probe_writable, self.root)

    async def close(self) -> None:
        return None


def _meta_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta")


def _open_temp(path: Path) -> tuple[IO[bytes], Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    return os.fdopen(fd, "wb"), Path(name)


def _commit(file: IO[bytes], tmp: Path, path: Path, blob: StoredBlob) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()
    meta = {"content_type": blob.content_type, "bytes": blob.bytes, "sha256": blob.sha256}
    meta_fd, meta_tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(meta_fd, "w") as meta_file:
            json.dump(meta, meta_file)
        os.replace(meta_tmp, _meta_path(path))
    except BaseException:
        Path(meta_tmp).unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _stat(path: Path) -> tuple[int, str]:
    size = path.stat().st_size
    if path.is_dir():
        raise IsADirectoryError(path)
    try:
        content_type = str(json.loads(_meta_path(path).read_text())["content_type"])
    except (OSError, ValueError, KeyError):
        content_type = "application/octet-stream"  # a blob placed by hand, without a sidecar
    return size, content_type


def _unlink_blob(path: Path) -> None:
    for target in (path, _meta_path(path)):
        # A key that names a directory, or runs through a file, holds no blob.
        with contextlib.suppress(IsADirectoryError, NotADirectoryError):
            target.unlink(missing_ok=True)


def _probe_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=root, prefix=".check.", suffix=".tmp")
    os.close(fd)
    os.unlink(name)
