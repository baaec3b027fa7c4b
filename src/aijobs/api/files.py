"""The files API: upload an input image once, then name it in jobs (``input.image: "file_..."``).

``POST /v1/files`` takes OpenAI's multipart shape (``file`` and ``purpose``), so the OpenAI SDK's
``client.files.create`` works. An upload is checked by its bytes (PNG, JPEG, GIF or WebP), limited
to ``AIJOBS_MAX_UPLOAD_BYTES``, streamed into the BlobStore and hashed on the way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from aijobs.api.deps import Services, services, tenant
from aijobs.errors import InvalidRequest, NotFound, PayloadTooLarge
from aijobs.files import FileRecord, new_file_id, sniff_image
from aijobs.storage import BlobTooLarge

router = APIRouter(prefix="/v1/files", tags=["files"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
#: Purposes an image input may be uploaded under (OpenAI's names for it).
IMAGE_PURPOSES = frozenset({"vision", "user_data"})
READ_CHUNK_BYTES = 256 * 1024
MAX_FILENAME_CHARS = 255


def _json(payload: object, status_code: int) -> Response:
    return Response(orjson.dumps(payload), status_code, media_type="application/json")


@router.post("", summary="Upload a file (an input image)")
async def upload(request: Request, svc: Svc, owner: Tenant) -> Response:
    """Multipart ``file`` + ``purpose`` (``vision`` or ``user_data``); answers the file object."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "send the file as multipart/form-data with fields 'file' and 'purpose'", param="file"
        )
    async with request.form(max_files=1, max_fields=4) as form:
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or purpose not in IMAGE_PURPOSES:
            raise InvalidRequest(
                f"purpose: must be one of {', '.join(sorted(IMAGE_PURPOSES))}", param="purpose"
            )
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file: a file part is required", param="file")
        head = await upload.read(16)
        content_type = sniff_image(head)
        if content_type is None:
            raise InvalidRequest("file: must be a PNG, JPEG, GIF or WebP image", param="file")
        await upload.seek(0)
        record = await _store(svc, owner, purpose, upload, content_type)
    return _json(record.view(), 200)


async def _store(
    svc: Services, owner: str, purpose: str, upload: UploadFile, content_type: str
) -> FileRecord:
    file_id, now = new_file_id(), time.time()
    key = f"files/{owner}/{file_id}"
    limit = svc.settings.max_upload_bytes
    try:
        blob = await svc.blobs.put(key, _chunks(upload), content_type, max_bytes=limit)
    except BlobTooLarge:
        raise PayloadTooLarge(f"file: larger than the {limit}-byte limit", param="file") from None
    filename = (upload.filename or "upload")[:MAX_FILENAME_CHARS]
    record = FileRecord(
        file_id, owner, purpose, filename, content_type, blob.bytes, blob.sha256, now,
        now + svc.settings.file_ttl_s,
    )  # fmt: skip
    await svc.files.save(record)
    return record


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(READ_CHUNK_BYTES):
        yield chunk


async def _owned(svc: Services, file_id: str, owner: str) -> FileRecord:
    record = await svc.files.get(file_id, owner)
    if record is None:
        raise NotFound(f"no file {file_id!r}", param="id")
    return record


@router.get("/{file_id}", summary="Fetch a file's metadata")
async def get_file(file_id: str, svc: Svc, owner: Tenant) -> Response:
    return _json((await _owned(svc, file_id, owner)).view(), 200)


@router.delete("/{file_id}", summary="Delete a file")
async def delete_file(file_id: str, svc: Svc, owner: Tenant) -> Response:
    record = await _owned(svc, file_id, owner)
    await svc.files.delete(record)
    return _json({"id": record.id, "object": "file", "deleted": True}, 200)
