"""The BlobStore contract, run against both backends: files on disk, and S3 (moto over real HTTP)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx2
import pytest
from botocore.exceptions import ClientError

from aijobs.storage import BlobNotFound, BlobStore, BlobTooLarge, LocalStore, S3Store, StoredBlob
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, moto_s3_server

MIB = 1024 * 1024
PART_BYTES = 5 * MIB
SECRET = b"storage-test-secret-0123456789"
BASE_URL = "http://blobs.test"
BAD_KEYS = ["../x", "/abs", "a//b", "a\\b", "", "a/../b", "a/./b", "a/", "a/.hidden", "a b", "é", "k" * 513]


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def s3_admin(s3_url: str) -> Iterator[Any]:
    """A plain boto3 client, to look at the bucket behind the store's back."""
    client = boto3.client(
        "s3", endpoint_url=s3_url, region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
    )  # fmt: skip
    yield client
    client.close()


async def open_s3(s3_url: str, bucket: str, create_bucket: bool = True) -> S3Store:
    return await S3Store.open(
        bucket, endpoint_url=s3_url, region=REGION, access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY, create_bucket=create_bucket, part_size_bytes=PART_BYTES,
    )  # fmt: skip


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, s3_url: str) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "blobs", BASE_URL, SECRET)
        return
    s3 = await open_s3(s3_url, f"test-{uuid.uuid4().hex[:16]}")
    try:
        yield s3
    finally:
        await s3.close()


async def read_all(store: BlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def open_uploads(store: BlobStore, s3_admin: Any) -> list[Any]:
    """Multipart uploads S3 still holds (and bills for) in the store's bucket; none for a LocalStore."""
    if not isinstance(store, S3Store):
        return []
    uploads: list[Any] = s3_admin.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return uploads


def leftover_files(store: BlobStore) -> list[str]:
    """Every file under a LocalStore's root: blobs, sidecars and any temporary file a put left."""
    if not isinstance(store, LocalStore):
        return []
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def names_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def test_put_bytes_round_trips(store: BlobStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)

    blob = await store.put("acme/job_01/0.png", data, "image/png")

    assert blob == StoredBlob("acme/job_01/0.png", "image/png", len(data), hashlib.sha256(data).hexdigest())
    assert blob.to_dict() == {
        "key": "acme/job_01/0.png", "content_type": "image/png", "bytes": len(data), "sha256": blob.sha256,
    }  # fmt: skip
    assert await store.stat("acme/job_01/0.png") == (len(data), "image/png")
    assert await read_all(store, "acme/job_01/0.png") == data


async def test_reads_resume_from_an_offset(store: BlobStore) -> None:
    data = os.urandom(300_000)  # several read chunks
    await store.put("acme/files/in.jsonl", data, "application/jsonl")
    for offset in (1, 65_536, 299_999):
        assert b"".join([c async for c in store.read("acme/files/in.jsonl", offset)]) == data[offset:]


async def test_put_replaces_an_existing_blob(store: BlobStore) -> None:
    await store.put("acme/job_01/0.bin", b"old bytes", "application/octet-stream")
    await store.put("acme/job_01/0.bin", b"new", "text/plain")

    assert await store.stat("acme/job_01/0.bin") == (3, "text/plain")
    assert await read_all(store, "acme/job_01/0.bin") == b"new"


async def test_streamed_put_larger_than_a_part_round_trips(store: BlobStore, s3_admin: Any) -> None:
    data = os.urandom(11 * MIB + 12345)  # three S3 parts, the last one short

    blob = await store.put("acme/job_02/0.mp4", chunked(data, 300_007), "video/mp4")

    assert (blob.bytes, blob.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await store.stat("acme/job_02/0.mp4") == (len(data), "video/mp4")
    assert await read_all(store, "acme/job_02/0.mp4") == data
    if isinstance(store, S3Store):
        head = s3_admin.head_object(Bucket=store.bucket, Key="acme/job_02/0.mp4")
        assert head["Metadata"]["sha256"] == blob.sha256
        assert head["ContentType"] == "video/mp4"
    assert open_uploads(store, s3_admin) == []


async def test_put_of_exactly_max_bytes_is_accepted(store: BlobStore) -> None:
    blob = await store.put("acme/job_03/0.bin", b"x" * 10, "application/octet-stream", max_bytes=10)

    assert blob.bytes == 10


async def test_bytes_over_max_bytes_are_refused(store: BlobStore) -> None:
    with pytest.raises(BlobTooLarge):
        await store.put("acme/job_03/1.bin", b"x" * 11, "application/octet-stream", max_bytes=10)

    with pytest.raises(BlobNotFound):
        await store.stat("acme/job_03/1.bin")
    assert leftover_files(store) == []


async def test_stream_over_max_bytes_is_aborted_without_leftovers(store: BlobStore, s3_admin: Any) -> None:
    data = os.urandom(11 * MIB)
    limit = PART_BYTES + 2 * MIB  # past the first part, so S3 has a multipart upload under way

    with pytest.raises(BlobTooLarge):
        await store.put("acme/job_04/0.mp4", chunked(data, 256 * 1024), "video/mp4", max_bytes=limit)

    with pytest.raises(BlobNotFound):
        await store.stat("acme/job_04/0.mp4")
    assert open_uploads(store, s3_admin) == []
    assert leftover_files(store) == []


async def test_signed_url_gives_the_bytes(store: BlobStore) -> None:
    data = os.urandom(2048)
    await store.put("acme/job_05/0.webp", data, "image/webp")

    url = await store.signed_url("acme/job_05/0.webp", ttl_s=300)

    if isinstance(store, LocalStore):
        assert_local_link(store, url)
        return
    async with httpx2.AsyncClient() as http:  # no credentials: the URL alone must be enough
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"


def assert_local_link(store: LocalStore, url: str) -> None:
    """LocalStore links are served by the API, which admits exactly those :meth:`verify` accepts."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
    assert parts.path == "/v1/blobs/acme/job_05/0.webp"
    query = parse_qs(parts.query)
    expires, sig = int(query["expires"][0]), query["sig"][0]

    assert store.verify("acme/job_05/0.webp", expires, sig)
    assert not store.verify("acme/job_05/0.webp", expires, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    assert not store.verify("acme/job_05/1.webp", expires, sig)  # a link for one blob opens no other
    assert not store.verify("acme/job_05/0.webp", expires + 1, sig)  # nor can its expiry be extended
    assert not store.verify("acme/job_05/0.webp", expires, sig, now_s=expires + 1)
    other = LocalStore(store.root, BASE_URL, b"another-secret-0123456789")
    assert not other.verify("acme/job_05/0.webp", expires, sig)
    assert (
        store.path_for("acme/job_05/0.webp").read_bytes() == (store.root / "acme/job_05/0.webp").read_bytes()
    )


async def test_missing_key_is_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await read_all(store, "acme/job_06/missing.png")
    with pytest.raises(BlobNotFound):
        await store.stat("acme/job_06/missing.png")


async def test_deleted_blob_is_gone(store: BlobStore) -> None:
    await store.put("acme/job_07/0.png", b"png", "image/png")

    await store.delete("acme/job_07/0.png")
    await store.delete("acme/job_07/0.png")  # deleting twice is not an error

    with pytest.raises(BlobNotFound):
        await store.stat("acme/job_07/0.png")
    with pytest.raises(BlobNotFound):
        await read_all(store, "acme/job_07/0.png")
    assert leftover_files(store) == []


async def test_bad_keys_are_refused(store: BlobStore, tmp_path: Path) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.put(key, b"data", "text/plain")
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.stat(key)
        with pytest.raises(ValueError, match="invalid blob key"):
            await read_all(store, key)
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.signed_url(key, ttl_s=60)
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.delete(key)
    if isinstance(store, LocalStore):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.path_for("../outside")
        assert not store.verify("../outside", 2**40, "0" * 64)
    assert names_in(tmp_path) <= {"blobs"}  # nothing landed beside the store's root


async def test_bad_content_type_is_refused(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="invalid content type"):
        await store.put("acme/job_08/0.txt", b"data", "text/plain\r\nx-evil: 1")


async def test_check_passes(store: BlobStore) -> None:
    await store.check()


async def test_check_fails_without_the_bucket(s3_url: str) -> None:
    store = await open_s3(s3_url, f"missing-{uuid.uuid4().hex[:16]}", create_bucket=False)
    try:
        with pytest.raises(ClientError):
            await store.check()
    finally:
        await store.close()


async def test_signed_urls_use_the_public_endpoint_when_users_reach_s3_elsewhere(s3_endpoint: str) -> None:
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = await S3Store.open(
        "aijobs-public-url", endpoint_url=s3_endpoint, region="us-east-1", access_key_id="testing",
        secret_access_key="testing", create_bucket=True, public_endpoint_url=public,
    )  # fmt: skip
    try:
        await store.put("acme/job_1/0.txt", b"hello", "text/plain")
        url = await store.signed_url("acme/job_1/0.txt", ttl_s=60)
        assert url.startswith(public + "/aijobs-public-url/acme/job_1/0.txt?")
        async with httpx2.AsyncClient() as http:
            assert (await http.get(url)).content == b"hello"
    finally:
        await store.close()
