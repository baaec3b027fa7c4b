"""The files API: input images named in jobs (``input.image: "file_..."``) and batch input files.

``POST /v1/files`` takes OpenAI's multipart shape (``file`` and ``purpose``), so the OpenAI SDK's
``client.files.create`` and ``client.files.content`` work. An upload is limited to
``AIJOBS_MAX_UPLOAD_BYTES``, streamed into the BlobStore and hashed on the way, and checked first:

- ``vision`` / ``user_data``: by its bytes (PNG, JPEG, GIF or WebP);
- ``batch``: every line, as a batch would run it (:mod:`aijobs.api.openai.batchfile`); a file with
  bad lines is refused with each line's problem in ``error.details``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from aijobs.api import bodies
from aijobs.api.deps import Services, services, tenant
from aijobs.api.openai import batchfile
from aijobs.errors import InvalidRequest, NotFound, PayloadTooLarge
from aijobs.files import FileRecord, sniff_image
from aijobs.storage import BlobTooLarge

router = APIRouter(prefix="/v1/files", tags=["files"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
#: Purposes an image input may be uploaded under (OpenAI's names for it).
IMAGE_PURPOSES = frozenset({"vision", "user_data"})
BATCH_PURPOSE = "batch"
PURPOSES = IMAGE_PURPOSES | {BATCH_PURPOSE}
READ_CHUNK_BYTES = 256 * 1024
MAX_FILENAME_CHARS = 255


def _json(payload: object, status_code: int) -> Response:
    return Response(orjson.dumps(payload), status_code, media_type="application/json")


@router.post("", summary="Upload a file (an input image or a batch input file)")
async def upload(request: Request, svc: Svc, owner: Tenant) -> Response:
    """Multipart ``file`` + ``purpose`` (``vision``, ``user_data`` or ``batch``); answers the file object."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "send the file as multipart/form-data with fields 'file' and 'purpose'", param="file"
        )
    async with request.form(max_files=1, max_fields=4) as form:
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            raise InvalidRequest(f"purpose: must be one of {', '.join(sorted(PURPOSES))}", param="purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file: a file part is required", param="file")
        content_type, batch = await _checked(svc, purpose, upload)
        await upload.seek(0)
        record = await _store(svc, owner, purpose, upload, content_type, batch)
    return _json(record.view(), 200)


async def _checked(svc: Services, purpose: str, upload: UploadFile) -> tuple[str, batchfile.Checked | None]:
    """The upload's content type (and what a batch file holds); a 4xx saying what is wrong."""
    if purpose == BATCH_PURPOSE:
        return "application/jsonl", await _batch_lines(svc, upload)
    content_type = sniff_image(await upload.read(16))
    if content_type is None:
        raise InvalidRequest("file: must be a PNG, JPEG, GIF or WebP image", param="file")
    return content_type, None


async def _batch_lines(svc: Services, upload: UploadFile) -> batchfile.Checked:
    """What a batch input file holds; a 400 listing its bad lines otherwise."""
    settings = svc.settings
    checked = await batchfile.check(
        _chunks(upload), settings.max_batch_lines, settings.max_batch_line_bytes, guard=svc.guard
    )
    if checked.error_count:
        first = checked.errors[0]
        message = f"file: {checked.error_count} bad line(s); the first, line {first.line}: {first.message}"
        raise InvalidRequest(message, param="file", details=[error.view() for error in checked.errors])
    return checked


async def _store(
    svc: Services,
    owner: str,
    purpose: str,
    upload: UploadFile,
    content_type: str,
    batch: batchfile.Checked | None,
) -> FileRecord:
    limit = svc.settings.max_upload_bytes
    filename = (upload.filename or "upload")[:MAX_FILENAME_CHARS]
    try:
        return await svc.files.store(
            owner, purpose, filename, _chunks(upload), content_type, max_bytes=limit,
            lines=batch.lines if batch else None, endpoint=batch.endpoint if batch else None,
        )  # fmt: skip
    except BlobTooLarge:
        raise PayloadTooLarge(f"file: larger than the {limit}-byte limit", param="file") from None


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


@router.get("/{file_id}/content", summary="Download a file's bytes")
async def get_content(file_id: str, svc: Svc, owner: Tenant) -> Response:
    record = await _owned(svc, file_id, owner)
    headers = {"content-length": str(record.bytes)}
    return await bodies.streamed(svc.blobs, record.key, f"the file {file_id!r}", record.content_type, headers)


@router.delete("/{file_id}", summary="Delete a file")
async def delete_file(file_id: str, svc: Svc, owner: Tenant) -> Response:
    record = await _owned(svc, file_id, owner)
    await svc.files.delete(record)
    return _json({"id": record.id, "object": "file", "deleted": True}, 200)
