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

from aijobs.settings import Settings
from aijobs.storage.blob import BlobNotFound, BlobStore, BlobTooLarge, StoredBlob, check_key
from aijobs.storage.local import LocalStore
from aijobs.storage.s3 import S3Store

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobTooLarge",
    "LocalStore",
    "S3Store",
    "StoredBlob",
    "check_key",
    "open_blob_store",
]


async def open_blob_store(settings: Settings) -> BlobStore:
    """The store ``settings`` describe. Never creates an S3 bucket: provisioning is not a runtime job."""
    if settings.blob_backend == "s3":
        return await S3Store.open(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id.get_secret_value() or None,
            secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
            public_endpoint_url=settings.s3_public_url or None,
        )
    return LocalStore(settings.blob_dir, settings.public_url, settings.require_signing_secret())
