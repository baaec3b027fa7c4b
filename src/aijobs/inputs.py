"""Input images (image edits, image-to-video) made ready for any provider: always an inline data URL.

A job's ``input.image`` is an http(s) URL, a ``data:image/...`` URL, or an uploaded file's id. The
worker turns the first and last into a data URL before routing, so adapters never fetch anything
and a provider never needs to reach us: a URL is fetched through the outbound guard (no private,
loopback or metadata addresses, no redirects to them), a file is read from the BlobStore; either
must be an image (by its bytes, not its name) within the size limit.

The API checks the same rules at submit time (:func:`check_image_ref`), so most bad inputs are a
422 naming ``input.image`` rather than a failed job.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx2

from aijobs.errors import InvalidRequest
from aijobs.files import Files, is_file_id, sniff_image
from aijobs.outbound import Guard, OutboundRefused

PARAM = "input.image"


async def check_url(guard: Guard, url: str, *, param: str, what: str) -> None:
    """Refuse (422 naming ``param``) a URL the outbound guard would not let the service call."""
    try:
        await guard.check(url)
    except OutboundRefused as exc:
        raise InvalidRequest(f"{what}: {exc}", param=param) from None


async def check_image_ref(image: str, tenant: str, files: Files, guard: Guard) -> None:
    """Refuse (422) an image reference that could never be read: a foreign file, a guarded URL."""
    if is_file_id(image):
        if await files.get(image, tenant) is None:
            raise InvalidRequest(f"file {image} does not exist (or has expired)", param=PARAM)
    elif image.startswith(("http://", "https://")):
        await check_url(guard, image, param=PARAM, what="the image URL cannot be used")


async def inline_image(
    request: Any, tenant: str, *, files: Files, guard: Guard, http: httpx2.AsyncClient, max_bytes: int
) -> Any:
    """``request`` with its ``image`` (if any) as a data URL; :class:`InvalidRequest` if it can't be read."""
    image: str | None = getattr(request, "image", None)
    if image is None or image.startswith("data:"):
        return request
    if is_file_id(image):
        record = await files.get(image, tenant)
        if record is None:
            raise InvalidRequest(f"file {image} does not exist (or has expired)", param=PARAM)
        data = await files.read(record)
    else:
        try:
            data, _ = await guard.fetch(http, image, max_bytes=max_bytes)
        except OutboundRefused as exc:
            raise InvalidRequest(f"the image URL cannot be used: {exc}", param=PARAM) from None
    content_type = sniff_image(data[:16])
    if content_type is None:
        raise InvalidRequest("the image is not a PNG, JPEG, GIF or WebP file", param=PARAM)
    return request.model_copy(update={"image": data_url(data, content_type)})


def data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"
