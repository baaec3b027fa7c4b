"""A body-size guard: a request body over the limit is refused with 413 before it is read whole."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aijobs.api.errors import error_body
from aijobs.errors import PayloadTooLarge


class BodyLimit:
    """ASGI middleware. Checks ``Content-Length`` up front and counts streamed bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Path → its own limit (uploads are larger than job bodies).
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.overrides.get(scope["path"].rstrip("/"), self.max_bytes)
        if declared_over(scope, max_bytes):
            await _send_413(send, max_bytes)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


def declared_over(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` is over ``max_bytes`` (so it need not be read)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            return True
    return False


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; :class:`PayloadTooLarge` as soon as it is known to be over ``max_bytes``."""
    if declared_over(scope, max_bytes):
        raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
    chunks, received = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away mid-body
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_413(send: Send, max_bytes: int) -> None:
    error = PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
    payload = error_body(error.http_status, error.code, error.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
