"""TEST FAKE of provider HTTP APIs that llmock does not serve; not a provider, never used in production.

One Starlette app hosts every fake, each under its own path prefix; an adapter gets
``base_url = fake_url + prefix``. Each endpoint follows the wire format in its provider's documentation:

- ``POST /gemini/v1beta/models/{model}:embedContent`` and ``.../{model}:batchEmbedContents``: Gemini API
  embeddings (ai.google.dev/api/embeddings).
- ``POST /cohere/v2/rerank`` and ``POST /cohere/v2/embed``: Cohere API v2 (docs.cohere.com/reference/rerank,
  docs.cohere.com/reference/embed).
- ``POST /jina/v1/rerank``: Jina Reranker API (jina.ai/reranker).
- ``POST /voyage/v1/rerank``: Voyage AI Reranker API (docs.voyageai.com/reference/reranker-api); it
  takes ``top_k`` and answers ``data``, and rejects unknown fields such as ``top_n``.
- ``POST /dashscope/api/v1/services/rerank/text-rerank/text-rerank``: DashScope / Model Studio text rerank
  (gte-rerank-v2), ``input`` plus ``parameters``, answered as ``output.results``.
- ``POST /siliconflow/v1/rerank``: SiliconFlow rerank (docs.siliconflow.cn), the Cohere-like shape that
  Ark and Qianfan also use.

Gemini wants an ``x-goog-api-key`` header (any value; absent is a 401), the others
``Authorization: Bearer <any>``. Errors come in each provider's own shape: Gemini
``{"error": {"code", "message", "status"}}``, Cohere ``{"id", "message"}``, Jina and Voyage
``{"detail"}``, DashScope ``{"code", "message", "request_id"}``, SiliconFlow ``{"code", "message", "data"}``.

Fault injection mirrors llmock's ``/_llmock`` control API, so one test drives either server the same way:
``POST /_llmock/reset``; ``POST /_llmock/scenario`` with ``{"behaviors": [...]}`` of ``fail``
(``status``, ``retry_after``, ``message``, ``code``) and ``delay`` (``seconds``) behaviours, each with
``times`` (default 1, ``null`` for ever) and an optional ``match`` (``provider``, ``path``, ``model``
globs); ``GET``/``DELETE /_llmock/scenario``; ``GET``/``DELETE /_llmock/requests``; ``GET /health``.
As in llmock, a request takes the first matching ``fail`` if any is queued, else the first matching
``delay``. Unlike llmock, ``GET /_llmock/requests`` is a plain list of
``{"method", "path", "query", "headers", "json"}`` (headers lowercased), and ``Retry-After`` is sent only
when the behaviour gives ``retry_after``. A ``code`` lands where the provider carries one: Gemini's
``status``, Cohere's ``type``, DashScope's and SiliconFlow's ``code`` (numeric when it is digits); Jina's
and Voyage's ``{"detail"}`` has no place for it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import embed, rerank

Handler = Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]

ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("gemini", "/gemini/v1beta/models/{model}:embedContent", embed.gemini_embed),
    ("gemini", "/gemini/v1beta/models/{model}:batchEmbedContents", embed.gemini_batch),
    ("cohere", "/cohere/v2/rerank", rerank.cohere_rerank),
    ("cohere", "/cohere/v2/embed", embed.cohere_embed),
    ("jina", "/jina/v1/rerank", rerank.jina_rerank),
    ("voyage", "/voyage/v1/rerank", rerank.voyage_rerank),
    ("dashscope", "/dashscope/api/v1/services/rerank/text-rerank/text-rerank", rerank.dashscope_rerank),
    ("siliconflow", "/siliconflow/v1/rerank", rerank.siliconflow_rerank),
]
PROVIDERS = frozenset(provider for provider, _, _ in ENDPOINTS)
NO_KEY = {
    "gemini": "Method doesn't allow unregistered callers. Please use an API key (x-goog-api-key).",
    "cohere": "no api key supplied",
    "jina": "Unauthorized: a Bearer API key is required.",
    "voyage": "No API key provided.",
    "dashscope": "No API-key provided.",
    "siliconflow": "Invalid token",
}
LABELS = {
    400: "Bad request.", 401: "Unauthorized.", 402: "Payment required.", 403: "Forbidden.",
    404: "Resource not found.", 408: "Request timeout.", 409: "Conflict.", 413: "Payload too large.",
    422: "Unprocessable entity.", 429: "Rate limit exceeded.", 500: "Internal server error.",
    501: "Not implemented.", 502: "Bad gateway.", 503: "Service unavailable.", 504: "Gateway timeout.",
    529: "Service overloaded.",
}  # fmt: skip
GEMINI_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
DASHSCOPE_CODE = {
    400: "InvalidParameter", 401: "InvalidApiKey", 403: "AccessDenied", 404: "ModelNotFound",
    429: "Throttling.RateQuota", 500: "InternalError", 503: "ServiceUnavailable",
}  # fmt: skip


def _label(status: int) -> str:
    try:
        return LABELS.get(status) or HTTPStatus(status).phrase + "."
    except ValueError:
        return "Error."


def error_body(provider: str, status: int, message: str | None = None, code: str | None = None) -> Any:
    """The error envelope ``provider`` answers ``status`` with."""
    text = message or _label(status)
    if provider == "gemini":
        kind = (
            code or GEMINI_STATUS.get(status) or ("UNAVAILABLE" if status >= 500 else "FAILED_PRECONDITION")
        )
        return {"error": {"code": status, "message": text, "status": kind}}
    if provider == "cohere":
        return {"id": rerank.new_id(), "message": text} | ({"type": code} if code else {})
    if provider == "dashscope":
        kind = (
            code or DASHSCOPE_CODE.get(status) or ("InternalError" if status >= 500 else "InvalidParameter")
        )
        return {"code": kind, "message": text, "request_id": rerank.new_id()}
    if provider == "siliconflow":
        number: int | str = status if code is None else int(code) if code.isdigit() else code
        return {"code": number, "message": text, "data": None}
    return {"detail": text}  # jina, voyage


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(
    provider: str,
    status: int,
    message: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> Response:
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    return json_response(error_body(provider, status, message, code), status, headers)


@dataclass
class Behavior:
    """One queued ``fail`` or ``delay``, as llmock's ``Fail`` and ``Delay``."""

    spec: dict[str, Any]
    kind: str
    remaining: int | None
    match: dict[str, Any]
    status: int = 0
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None
    seconds: float = 0.0

    def accepts(self, provider: str, path: str, model: str | None) -> bool:
        want = self.match
        return (
            want.get("provider") in (None, provider)
            and fnmatch.fnmatchcase(path, want.get("path") or "*")
            and fnmatch.fnmatchcase(model or "", want.get("model") or "*")
            and not want.get("stream")
            and not want.get("tools")
        )


FIELDS = {"fail": {"status", "retry_after", "message", "code"}, "delay": {"seconds"}}
MATCH_KEYS = {"provider", "path", "model", "stream", "tools"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def parse_behavior(spec: Any) -> Behavior:
    """A behaviour from its llmock JSON form; ValueError for anything llmock (or this fake) would refuse."""
    if not isinstance(spec, dict) or spec.get("type") not in FIELDS:
        raise ValueError(f"Unsupported behaviour {spec!r}: this fake knows {sorted(FIELDS)}")
    kind = spec["type"]
    unknown = set(spec) - FIELDS[kind] - {"type", "times", "match"}
    match = spec.get("match") or {}
    times = spec.get("times", 1)
    if unknown or not isinstance(match, dict) or set(match) - MATCH_KEYS:
        raise ValueError(f"Invalid {kind!r} behaviour: unknown field in {spec!r}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be >= 1, or null for a permanent behaviour")
    if kind == "delay":
        if not _number(spec.get("seconds")):
            raise ValueError("delay.seconds must be a number >= 0")
        return Behavior(spec, kind, times, match, seconds=float(spec["seconds"]))
    status, retry_after = spec.get("status"), spec.get("retry_after")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"fail.status must be an HTTP error (400-599), got {status!r}")
    if retry_after is not None and not _number(retry_after):
        raise ValueError("fail.retry_after must be a number >= 0")
    message, code = spec.get("message"), spec.get("code")
    if not isinstance(message, str | None) or not isinstance(code, str | None):
        raise ValueError("fail.message and fail.code must be strings")
    return Behavior(spec, kind, times, match, status, retry_after, message, code)


@dataclass
class FakeState:
    behaviors: list[Behavior] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def take(self, provider: str, path: str, model: str | None) -> Behavior | None:
        """Consume the first matching ``fail``, else the first matching ``delay``, as llmock does."""
        for kind in ("fail", "delay"):
            for behavior in self.behaviors:
                if behavior.kind == kind and behavior.accepts(provider, path, model):
                    if behavior.remaining is not None:
                        behavior.remaining -= 1
                        if behavior.remaining == 0:
                            self.behaviors.remove(behavior)
                    return behavior
        return None

    async def record(self, request: Request) -> Any:
        """Journal the request; return its JSON body (None when absent or not JSON)."""
        try:
            body = orjson.loads(await request.body() or b"null")
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": {key.lower(): value for key, value in request.headers.items()},
                "json": body,
            }
        )
        return body


def authorized(provider: str, request: Request) -> bool:
    if provider == "gemini":
        return "x-goog-api-key" in request.headers
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def provider_endpoint(
    state: FakeState, provider: str, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body = await state.record(request)
        params = {key: str(value) for key, value in request.path_params.items()}
        model = params.get("model") or (body.get("model") if isinstance(body, dict) else None)
        behavior = state.take(provider, request.url.path, model if isinstance(model, str) else None)
        if behavior is not None and behavior.kind == "fail":
            fail = behavior
            return error_response(provider, fail.status, fail.message, fail.code, fail.retry_after)
        if behavior is not None:
            await asyncio.sleep(behavior.seconds)
        if not authorized(provider, request):
            return error_response(provider, 401, NO_KEY[provider])
        if not isinstance(body, dict):
            return error_response(provider, 400, "The request body must be a JSON object.")
        try:
            return json_response(handler(body, params))
        except rerank.BadRequest as exc:
            return error_response(provider, 400, str(exc))

    return endpoint


def create_app() -> Starlette:
    """A fresh fake with its own queue and journal."""
    state = FakeState()

    async def reset(request: Request) -> Response:
        state.behaviors.clear()
        state.requests.clear()
        return json_response({"reset": True})

    async def add_scenario(request: Request) -> Response:
        try:
            payload = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return json_response({"detail": "The body must be JSON."}, 400)
        raw = payload.get("behaviors") if isinstance(payload, dict) else None
        if not isinstance(raw, list) or not raw:
            return json_response({"detail": "Expected a non-empty 'behaviors' list."}, 400)
        try:
            behaviors = [parse_behavior(spec) for spec in raw]
        except ValueError as exc:
            return json_response({"detail": str(exc)}, 400)
        state.behaviors.extend(behaviors)
        return json_response({"queued": len(behaviors), "pending": len(state.behaviors)}, 201)

    async def list_scenario(request: Request) -> Response:
        return json_response({"pending": [behavior.spec for behavior in state.behaviors]})

    async def clear_scenario(request: Request) -> Response:
        state.behaviors.clear()
        return json_response({"pending": 0})

    async def list_requests(request: Request) -> Response:
        return json_response(state.requests)

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        return json_response({"count": 0})

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def not_found(request: Request, exc: Exception) -> Response:
        """A wrong path under a provider's prefix: journaled, and answered in that provider's shape."""
        provider = request.url.path.split("/")[1]
        if provider not in PROVIDERS:
            return json_response({"detail": "Not Found"}, 404)
        await state.record(request)
        return error_response(provider, 404, f"No such endpoint: {request.method} {request.url.path}")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/_llmock/reset", reset, methods=["POST"]),
        Route("/_llmock/scenario", add_scenario, methods=["POST"]),
        Route("/_llmock/scenario", list_scenario, methods=["GET"]),
        Route("/_llmock/scenario", clear_scenario, methods=["DELETE"]),
        Route("/_llmock/requests", list_requests, methods=["GET"]),
        Route("/_llmock/requests", clear_requests, methods=["DELETE"]),
        *(
            Route(path, provider_endpoint(state, p, handler), methods=["POST"])
            for p, path, handler in ENDPOINTS
        ),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found})
