"""The FastAPI application: ``create_app`` and its lifespan (error handlers: :mod:`aijobs.api.errors`)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from aijobs import connections, heap
from aijobs.api import errors, events, files, health, jobs, openai, operations, webhooks
from aijobs.api.deps import Services
from aijobs.api.fastpath import FastPaths
from aijobs.api.limits import BodyLimit
from aijobs.apikeys import ApiKeys
from aijobs.batches import BatchStore
from aijobs.calls import Calls
from aijobs.catalog import Catalog
from aijobs.events import JobEvents
from aijobs.files import Files
from aijobs.live import Hub
from aijobs.outbound import Guard
from aijobs.providers.registry import build_adapters
from aijobs.providers.transport import upstream_client
from aijobs.queue import JobQueue
from aijobs.routing import Routing, load_policy
from aijobs.routing.breakers import Breakers
from aijobs.routing.budgets import Budgets
from aijobs.routing.router import Router
from aijobs.settings import Settings
from aijobs.storage import open_blob_store
from aijobs.store import JobStore
from aijobs.webhooks.deliveries import Deliveries, delivery_ttl_s
from aijobs.webhooks.endpoints import Endpoints

log = logging.getLogger(__name__)


def create_app(settings: Settings, routing: Routing, env: Mapping[str, str]) -> FastPaths:
    """The API app. ``routing`` is resolved before the app exists, so a bad policy never serves;
    ``env`` holds the provider keys its calls use. Hot routes are served ahead of FastAPI
    (:class:`FastPaths`); ``.app`` is the FastAPI app behind them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connections.connect(settings.redis_url, max_connections=512)
        queue = await JobQueue.connect(settings.redis_url)
        blobs = await open_blob_store(settings)
        store = JobStore(redis, settings.job_ttl_s, *routing.config.ledger.ttls_s())
        hub = Hub(redis)
        await hub.start()
        hooks = routing.config.webhooks
        # Calls (the OpenAI-compatible surface) run in this process: its own client and Router.
        http = upstream_client()
        breakers = Breakers(redis, routing.config.breakers, routing.reachable())
        adapters = build_adapters(routing, http, env)
        router = Router(adapters, breakers=breakers)
        budgets = Budgets(redis, routing.config.breakers.refresh_s)
        app.state.services = Services(
            settings=settings,
            routing=routing,
            redis=redis,
            store=store,
            queue=queue,
            keys=ApiKeys(redis, settings.key_cache_ttl_s),
            blobs=blobs,
            breakers=breakers,
            files=Files(redis, blobs, settings.file_ttl_s),
            guard=Guard.from_setting(settings.outbound_allow),
            events=JobEvents(redis),
            hub=hub,
            endpoints=Endpoints(redis, hooks.max_endpoints, hooks.rotation_overlap_s),
            deliveries=Deliveries(redis, delivery_ttl_s(hooks.schedule_s, settings.job_ttl_s)),
            calls=Calls(routing, store, router, budgets),
            catalog=Catalog(routing, adapters.keys()),
            batches=BatchStore(redis, settings.job_ttl_s),
        )
        heap.settle()
        try:
            yield
        finally:
            await breakers.flush()
            await http.aclose()
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
    for exception, handler in errors.HANDLERS.items():
        app.add_exception_handler(exception, handler)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(operations.router)
    app.include_router(openai.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    hot = {("POST", "/v1/chat/completions"): openai.chat.complete}
    return FastPaths(app, hot, settings.max_body_bytes)


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


def app_from_env() -> FastPaths:
    """The factory uvicorn calls (``aijobs.api.app:app_from_env``): settings and routing from the env."""
    settings = Settings()
    env = dict(os.environ)
    routing = load_policy(settings.routing_file, env)
    for warning in routing.warnings:
        log.warning("%s", warning)
    return create_app(settings, routing, env)
