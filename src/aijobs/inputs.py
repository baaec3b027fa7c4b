"""Input images made ready for any provider, and the image URLs a provider is given checked.

A job's ``input.image`` (image edits, image-to-video) is an http(s) URL, a ``data:image/...`` URL, or
an uploaded file's id. The worker turns the first and last into a data URL before routing, so
adapters never fetch anything and a provider never needs to reach us: a URL is fetched through the
outbound guard (no private, loopback or metadata addresses, no redirects to them), a file is read
from the BlobStore; either must be an image (by its bytes, not its name) within the size limit.

A chat message's ``image_url`` parts are passed to the provider as they are (a provider fetches an
http(s) URL itself), so each such URL must pass the same guard: at submit (:func:`check_chat_images`,
a 422 naming the part) and again when the job runs. ``data:`` URLs are left alone (the body and
field limits cap their size).

The API checks the same rules at submit time (:func:`check_image_ref`), so most bad inputs are a
422 naming ``input.image`` rather than a failed job.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx2

from aijobs.errors import InvalidRequest
from aijobs.files import Files, is_file_id, sniff_image
from aijobs.outbound import Guard, Names, OutboundRefused
from aijobs.types.chat import ChatInput, ImagePart

PARAM = "input.image"


async def check_url(guard: Guard, url: str, *, param: str, what: str, names: Names | None = None) -> None:
    """Refuse (422 naming ``param``) a URL the outbound guard would not let the service call."""
    try:
        await guard.check(url, names=names)
    except OutboundRefused as exc:
        raise InvalidRequest(f"{what}: {exc}", param=param) from None


async def check_image_ref(
    image: str, tenant: str, files: Files, guard: Guard, *, names: Names | None = None
) -> None:
    """Refuse (422) an image reference that could never be read: a foreign file, a guarded URL."""
    if is_file_id(image):
        if await files.get(image, tenant) is None:
            raise InvalidRequest(f"file {image} does not exist (or has expired)", param=PARAM)
    elif image.startswith(("http://", "https://")):
        await check_url(guard, image, param=PARAM, what="the image URL cannot be used", names=names)


async def check_chat_images(
    request: ChatInput, guard: Guard, *, param_prefix: str, names: Names | None = None
) -> None:
    """Refuse (422) a chat image URL the outbound guard would not let the service call; ``param``
    names the part (``{param_prefix}messages.0.content.1.image_url.url``). ``data:`` URLs pass."""
    for m, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for p, part in enumerate(message.content):
            if isinstance(part, ImagePart) and not part.image_url.url.startswith("data:"):
                param = f"{param_prefix}messages.{m}.content.{p}.image_url.url"
                what = f"{param}: the image URL cannot be used"
                await check_url(guard, part.image_url.url, param=param, what=what, names=names)


async def inline_image(
    request: Any, tenant: str, *, files: Files, guard: Guard, http: httpx2.AsyncClient, max_bytes: int
) -> Any:
    """``request`` with its ``image`` (if any) as a data URL; :class:`InvalidRequest` if it can't be read.

    A chat request's image URLs are checked again (:func:`check_chat_images`): the job may have been
    queued before the checks at submit, and a name's addresses may have changed since.
    """
    if isinstance(request, ChatInput):
        await check_chat_images(request, guard, param_prefix="input.")
        return request
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
