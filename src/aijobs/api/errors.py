"""The one error shape and the handlers that produce it.

Every error a client sees is ``{"error": {"code", "message", "param", "type"}}`` with a code from
the closed list in :mod:`aijobs.errors`, whatever raised it: our own errors, FastAPI's parameter
validation, unknown routes, or a bug (500, logged, with no details leaked). It is also OpenAI's
error shape (``type`` names OpenAI's error classes), so the OpenAI SDK reads it.

On the OpenAI-compatible paths the status codes are the ones the OpenAI SDK expects, so its
exception classes and retries behave: a bad request is a 400 (not our 422), an input a provider
refused is a 400, rate limits and a spent budget are 429s, a provider's failure is a 502 or 504.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from aijobs.errors import AijobsError, CallerError, InternalError, InvalidRequest, StorageError, error_class

log = logging.getLogger(__name__)

#: Where the OpenAI-compatible surface lives (its paths take OpenAI's status codes).
OPENAI_PATHS = (
    "/v1/chat/", "/v1/embeddings", "/v1/rerank", "/v1/images/", "/v1/audio/", "/v1/models", "/v1/files",
    "/v1/batches",
)  # fmt: skip
_OPENAI_STATUS = {
    "caller_invalid_request": 400,
    "provider_rejected": 400,
    "provider_content_filtered": 400,
    "provider_context_window": 400,
    "provider_rate_limited": 429,
    "provider_timeout": 504,
    "gateway_budget_exceeded": 429,
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_HTTP_CODES = {
    401: "caller_unauthorized",
    404: "caller_not_found",
    405: "caller_invalid_request",
    409: "caller_conflict",
    413: "caller_payload_too_large",
    429: "caller_rate_limited",
}


def error_body(
    status: int, code: str, message: str, param: str | None = None, details: list[Any] | None = None
) -> bytes:
    """The error shape as JSON bytes (``details`` only when there are itemised problems)."""
    kind = "insufficient_quota" if code == "gateway_budget_exceeded" else _TYPES.get(status)
    error: dict[str, Any] = {"code": code, "message": message, "param": param, "type": kind or "api_error"}
    if details is not None:
        error["details"] = details
    return orjson.dumps({"error": error})


def error_response(
    status: int, code: str, message: str, param: str | None = None, details: list[Any] | None = None
) -> Response:
    body = error_body(status, code, message, param, details)
    return Response(body, status, media_type="application/json")


def status_for(error: AijobsError, openai: bool) -> int:
    """``error``'s HTTP status: our own, or on the OpenAI-compatible surface the one its SDK expects."""
    return _OPENAI_STATUS.get(error.code, error.http_status) if openai else error.http_status


def openai_status(code: str) -> int:
    """The OpenAI-surface status of an error known only by its code (a failed job's record)."""
    return _OPENAI_STATUS.get(code, error_class(code).http_status)


def aijobs_error_response(error: AijobsError, openai: bool, retry_after_s: float | None = None) -> Response:
    """The response for ``error``; a 429 says when to come back (``Retry-After``, whole seconds)."""
    status = status_for(error, openai)
    response = error_response(status, error.code, error.message, error.param, error.details)
    if status == 429 and retry_after_s:
        response.headers["Retry-After"] = str(max(1, round(retry_after_s)))
    return response


def _openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PATHS)


async def aijobs_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AijobsError)
    if not isinstance(exc, CallerError):
        log.error("request failed: %s: %s", exc.code, exc.message)
    return aijobs_error_response(exc, _openai(request))


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"][1:]) or None
    message = str(err["msg"]).removeprefix("Value error, ")
    error = InvalidRequest(f"{param}: {message}" if param else message, param=param)
    return aijobs_error_response(error, _openai(request))


async def http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(
        exc.status_code, "caller_invalid_request" if exc.status_code < 500 else "gateway_internal"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def redis_unavailable(_: Request, exc: Exception) -> Response:
    log.error("Redis is unavailable: %s", exc)
    error = StorageError("the job store is unavailable; retry shortly")
    response = error_response(error.http_status, error.code, error.message)
    response.headers["Retry-After"] = "1"
    return response


async def unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    error = InternalError("an internal error occurred; it has been logged")
    return error_response(500, error.code, error.message)


Handler = Callable[[Request, Exception], Awaitable[Response]]

#: Each exception class and the handler that answers it (the most specific class wins).
HANDLERS: dict[type[Exception], Handler] = {
    AijobsError: aijobs_error,
    RequestValidationError: validation_error,
    HTTPException: http_error,
    RedisConnectionError: redis_unavailable,
    RedisTimeoutError: redis_unavailable,
    Exception: unexpected,
}


async def answer_for(request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer for ``exc`` (for routes served outside FastAPI)."""
    handler = next(HANDLERS[cls] for cls in type(exc).__mro__ if cls in HANDLERS)
    return await handler(request, exc)
