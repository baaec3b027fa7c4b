"""``S3Store``: AWS S3 or any S3-compatible store (MinIO, R2); its URLs are S3 presigned URLs.

One long-lived aioboto3 client; large puts go up as multipart uploads, buffering one part at most.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from aijobs.storage.blob import (
    MIN_PART_BYTES,
    READ_CHUNK_BYTES,
    BlobNotFound,
    Digest,
    StoredBlob,
    check_content_type,
    check_key,
    chunks,
)

log = logging.getLogger(__name__)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


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
        self._signer = client  # signs download URLs; another client when users reach S3 by another URL

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
        public_endpoint_url: str | None = None,
    ) -> S3Store:
        """Connect (one long-lived client); with ``create_bucket``, create the bucket if it is missing.

        Credentials left as None come from the usual AWS chain (environment, profile, instance role).
        ``public_endpoint_url`` is the address users reach the store at when it differs from the one
        this service uses (``http://minio:9000`` inside compose, ``http://localhost:9000`` outside):
        presigned URLs sign the host, so they are made by a second client for that address.
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
            if public_endpoint_url:
                store._signer = await stack.enter_async_context(
                    session.client("s3", endpoint_url=public_endpoint_url, config=config)
                )
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
        check_content_type(content_type)
        digest = Digest(max_bytes)
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        try:
            async for chunk in chunks(data):
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
        url: str = await self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=ttl_s
        )
        return url

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        ranged = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=check_key(key), **ranged)
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
