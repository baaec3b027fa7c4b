"""The FastAPI application: ``create_app``, its lifespan, and the one error shape.

Every error a client sees is ``{"error": {"code", "message", "param"}}`` with a code from the closed
list in :mod:`aijobs.errors`, whatever raised it: our own errors, FastAPI's parameter validation,
unknown routes, or a bug (500, logged, with no details leaked).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from aijobs.api import events, files, health, jobs, operations, webhooks
from aijobs.api.deps import Services
from aijobs.api.limits import BodyLimit
from aijobs.apikeys import ApiKeys
from aijobs.errors import AijobsError, CallerError, InternalError, InvalidRequest, StorageError
from aijobs.events import JobEvents
from aijobs.files import Files
from aijobs.live import Hub
from aijobs.outbound import Guard
from aijobs.queue import JobQueue
from aijobs.routing import Routing, load_policy
from aijobs.routing.breakers import Breakers
from aijobs.settings import Settings
from aijobs.storage import open_blob_store
from aijobs.store import JobStore
from aijobs.webhooks.deliveries import Deliveries, delivery_ttl_s
from aijobs.webhooks.endpoints import Endpoints

log = logging.getLogger(__name__)

_HTTP_CODES = {
    401: "caller_unauthorized",
    404: "caller_not_found",
    405: "caller_invalid_request",
    409: "caller_conflict",
    413: "caller_payload_too_large",
    429: "caller_rate_limited",
}


def error_response(status: int, code: str, message: str, param: str | None = None) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "param": param}})
    return Response(body, status, media_type="application/json")


async def _aijobs_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AijobsError)
    if not isinstance(exc, CallerError):
        log.error("request failed: %s: %s", exc.code, exc.message)
    return error_response(exc.http_status, exc.code, exc.message, exc.param)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"][1:]) or None
    message = str(err["msg"]).removeprefix("Value error, ")
    error = InvalidRequest(f"{param}: {message}" if param else message, param=param)
    return error_response(error.http_status, error.code, error.message, error.param)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(
        exc.status_code, "caller_invalid_request" if exc.status_code < 500 else "gateway_internal"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def _redis_unavailable(_: Request, exc: Exception) -> Response:
    log.error("Redis is unavailable: %s", exc)
    error = StorageError("the job store is unavailable; retry shortly")
    response = error_response(error.http_status, error.code, error.message)
    response.headers["Retry-After"] = "1"
    return response


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    error = InternalError("an internal error occurred; it has been logged")
    return error_response(500, error.code, error.message)


def create_app(settings: Settings, routing: Routing) -> FastAPI:
    """The API app. ``routing`` is resolved before the app exists, so a bad policy never serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, max_connections=512)
        queue = await JobQueue.connect(settings.redis_url)
        blobs = await open_blob_store(settings)
        store = JobStore(redis, settings.job_ttl_s, *routing.config.ledger.ttls_s())
        hub = Hub(redis)
        await hub.start()
        hooks = routing.config.webhooks
        app.state.services = Services(
            settings=settings,
            routing=routing,
            redis=redis,
            store=store,
            queue=queue,
            keys=ApiKeys(redis, settings.key_cache_ttl_s),
            blobs=blobs,
            breakers=Breakers(redis, routing.config.breakers, routing.reachable()),
            files=Files(redis, blobs, settings.file_ttl_s),
            guard=Guard.from_setting(settings.outbound_allow),
            events=JobEvents(redis),
            hub=hub,
            endpoints=Endpoints(redis, hooks.max_endpoints, hooks.rotation_overlap_s),
            deliveries=Deliveries(redis, delivery_ttl_s(hooks.schedule_s, settings.job_ttl_s)),
        )
        try:
            yield
        finally:
            await hub.close()
            await blobs.close()
            await queue.close()
            await redis.aclose()

    app = FastAPI(
        title="aijobs",
        summary="One service boundary for AI jobs: chat, embed, rerank, image, speech, video.",
        version="0.1.0",
        lifespan=lifespan,
    )
    # An upload's multipart envelope adds a little to the file's own limit.
    uploads = {"/v1/files": settings.max_upload_bytes + 64 * 1024}
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, overrides=uploads)
    app.add_exception_handler(AijobsError, _aijobs_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_unavailable)
    app.add_exception_handler(RedisTimeoutError, _redis_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(operations.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the job request body, which the submit route parses itself."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        body = jobs.request_schema("#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("$defs", {}))
        content = {"application/json": {"schema": body}}
        schema["paths"]["/v1/jobs"]["post"]["requestBody"] = {"required": True, "content": content}
        app.openapi_schema = schema
    return app.openapi_schema


def app_from_env() -> FastAPI:
    """The factory uvicorn calls (``aijobs.api.app:app_from_env``): settings and routing from the env."""
    settings = Settings()
    routing = load_policy(settings.routing_file, dict(os.environ))
    for warning in routing.warnings:
        log.warning("%s", warning)
    return create_app(settings, routing)
