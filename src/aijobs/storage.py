"""The BlobStore: where media outputs (images, audio, video) live, and how users fetch them.

Job records in Redis hold only a blob's key and description (:class:`StoredBlob`); the bytes live
here. Users never receive a key, only an expiring URL from :meth:`BlobStore.signed_url` that works
without any other credentials.

Two backends share one contract:

- :class:`LocalStore`: files under a root directory, for development and single-host deployments.
  Its URLs point at this service (``/v1/blobs/{key}``), which checks an HMAC with :meth:`LocalStore.verify`.
- :class:`S3Store`: AWS S3 or an S3-compatible store (MinIO, R2); its URLs are S3 presigned URLs.

Both stream a put (hashing and counting as bytes arrive, never joining them all in memory), enforce a
size limit mid-stream, and leave nothing behind when a put fails. Keys look like
``tenant/job_id/0.png``; :func:`check_key` rejects anything that could escape a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from aijobs.settings import Settings

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 512
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum for every multipart part but the last
READ_CHUNK_BYTES = 256 * 1024
_INLINE_WRITE_BYTES = 64 * 1024  # smaller writes only touch the page cache; not worth a thread hop
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


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

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; raises BlobNotFound before yielding anything."""
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


def _check_content_type(content_type: str) -> None:
    # It becomes an HTTP header on the way out; control characters would let it forge others.
    if not content_type or not content_type.isascii() or not content_type.isprintable():
        raise ValueError(f"invalid content type {content_type[:80]!r}")


async def _chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    async for chunk in data:
        if chunk:
            yield chunk


class _Digest:
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
        _check_content_type(content_type)
        digest = _Digest(max_bytes)
        file, tmp = await asyncio.to_thread(_open_temp, path)
        try:
            async for chunk in _chunks(data):
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

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        try:
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


class S3Store:
    """Blobs as objects in one S3 bucket (AWS, or MinIO/R2/… through ``endpoint_url``).

    Build with :meth:`open`. A put that fits in one part is a single PutObject; a larger one is a
    multipart upload holding at most about one part in memory, aborted on any failure.
    """

    def __init__(
        self, client: Any, stack: contextlib.AsyncExitStack, bucket: str, part_size_bytes: int
    ) -> None:
        self.bucket = bucket
        self.part_size_bytes = part_size_bytes
        self._client = client
        self._stack = stack

    @classmethod
    async def open(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        create_bucket: bool = False,
        part_size_bytes: int = 8 * 1024 * 1024,
    ) -> S3Store:
        """Connect (one long-lived client); with ``create_bucket``, create the bucket if it is missing.

        Credentials left as None come from the usual AWS chain (environment, profile, instance role).
        """
        if part_size_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_size_bytes must be at least {MIN_PART_BYTES}")
        session = aioboto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        config = Config(
            signature_version="s3v4",
            # Custom endpoints (MinIO, R2, a local emulator) rarely have wildcard DNS for bucket hosts.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            # botocore's default extra checksums (aws-chunked CRC trailers) break some S3-compatible stores.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=endpoint_url or None, config=config)
            )
            store = cls(client, stack, bucket, part_size_bytes)
            if create_bucket:
                await store._create_bucket(region)
        except BaseException:
            await stack.aclose()
            raise
        return store

    async def _create_bucket(self, region: str) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND_CODES:
                raise
        # us-east-1 is the one region that rejects an explicit LocationConstraint.
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            await self._client.create_bucket(Bucket=self.bucket, **extra)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    async def put(
        self, key: str, data: bytes | AsyncIterable[bytes], content_type: str, *, max_bytes: int | None = None
    ) -> StoredBlob:
        check_key(key)
        _check_content_type(content_type)
        digest = _Digest(max_bytes)
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        try:
            async for chunk in _chunks(data):
                digest.add(chunk)
                buffer += chunk
                # Strictly greater: a part is only sent once more data is known to follow it.
                while len(buffer) > self.part_size_bytes:
                    upload = upload or await _MultipartUpload.start(
                        self._client, self.bucket, key, content_type
                    )
                    await upload.send(bytes(buffer[: self.part_size_bytes]))
                    del buffer[: self.part_size_bytes]
            blob = digest.blob(key, content_type)
            if upload is None:
                await self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=bytes(buffer), ContentType=content_type,
                    Metadata={"sha256": blob.sha256},
                )  # fmt: skip
            else:
                await upload.send(bytes(buffer))
                await upload.complete()
                await self._attach_sha256(blob)
        except BaseException:
            if upload is not None:
                await upload.discard()
            raise
        return blob

    async def _attach_sha256(self, blob: StoredBlob) -> None:
        # A multipart upload fixes its metadata before the hash is known; a server-side copy onto
        # itself adds it without moving the bytes through this process.
        await self._client.copy_object(
            Bucket=self.bucket, Key=blob.key, CopySource={"Bucket": self.bucket, "Key": blob.key},
            MetadataDirective="REPLACE", ContentType=blob.content_type, Metadata={"sha256": blob.sha256},
        )  # fmt: skip

    async def signed_url(self, key: str, ttl_s: int) -> str:
        url: str = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=ttl_s
        )
        return url

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            raise _not_found_or(exc, key) from None
        body = response["Body"]
        async with body:
            async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                yield chunk

    async def stat(self, key: str) -> tuple[int, str]:
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            raise _not_found_or(exc, key) from None
        return int(head["ContentLength"]), str(head.get("ContentType") or "application/octet-stream")

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=check_key(key))

    async def check(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()


class _MultipartUpload:
    """One S3 multipart upload in progress: parts are sent in order, then completed or discarded."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str) -> None:
        self._client = client
        self._where = {"Bucket": bucket, "Key": key}
        self._upload_id = upload_id
        self._parts: list[dict[str, Any]] = []
        self._completed = False

    @classmethod
    async def start(cls, client: Any, bucket: str, key: str, content_type: str) -> _MultipartUpload:
        response = await client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
        return cls(client, bucket, key, str(response["UploadId"]))

    async def send(self, part: bytes) -> None:
        number = len(self._parts) + 1
        response = await self._client.upload_part(
            **self._where, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    async def complete(self) -> None:
        await self._client.complete_multipart_upload(
            **self._where, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        self._completed = True

    async def discard(self) -> None:
        """Abort the upload (or delete the object, if it completed); never raises over the real error."""
        try:
            if self._completed:
                await self._client.delete_object(**self._where)
            else:
                await self._client.abort_multipart_upload(**self._where, UploadId=self._upload_id)
        except Exception:
            # Left for a bucket lifecycle rule (AbortIncompleteMultipartUpload) to clean up.
            log.warning("could not clean up upload of %s", self._where["Key"], exc_info=True)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _not_found_or(exc: ClientError, key: str) -> Exception:
    return BlobNotFound(key) if _error_code(exc) in _NOT_FOUND_CODES else exc


async def open_blob_store(settings: Settings) -> BlobStore:
    """The store ``settings`` describe. Never creates an S3 bucket: provisioning is not a runtime job."""
    if settings.blob_backend == "s3":
        return await S3Store.open(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id.get_secret_value() or None,
            secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        )
    return LocalStore(settings.blob_dir, settings.public_url, settings.require_signing_secret())
