"""Hot routes served as plain ASGI, in front of FastAPI.

A gateway call's own work (routing, the upstream exchange, the record) is about a millisecond of
CPU; FastAPI's middleware stack, route matching and dependency solving added half as much again to
every ``POST /v1/chat/completions``. :class:`FastPaths` answers the few routes where that matters
itself, with the same steps in the same order (body limit, Bearer key, the endpoint, the app's
exception handlers), and hands every other request, and the lifespan, to the FastAPI app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from aijobs.api.deps import Services, tenant
from aijobs.api.errors import answer_for
from aijobs.api.limits import declared_over, read_body
from aijobs.errors import PayloadTooLarge

#: A hot route's endpoint: the services, the caller's tenant and the request body → the answer.
Endpoint = Callable[[Services, str, bytes], Awaitable[Response]]


class FastPaths:
    """ASGI: ``routes`` (keyed by method and exact path) served directly, the rest by ``app``."""

    def __init__(self, app: FastAPI, routes: Mapping[tuple[str, str], Endpoint], max_body_bytes: int) -> None:
        self.app = app
        self.routes = dict(routes)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get((scope.get("method", ""), scope.get("path", "")))
        if endpoint is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # what Request.app (and so the services) is read from
        request = Request(scope, receive)
        try:
            if declared_over(scope, self.max_body_bytes):  # refused unread, as BodyLimit does
                raise PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
            owner = await tenant(request)  # before reading: nobody without a key gets a buffer
            body = await read_body(scope, receive, self.max_body_bytes)
            response = await endpoint(self.app.state.services, owner, body)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            response = await answer_for(request, exc)
        await response(scope, receive, send)
