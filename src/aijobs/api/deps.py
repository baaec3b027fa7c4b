"""Request dependencies: the services built in the lifespan, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from aijobs.apikeys import ApiKeys
from aijobs.batches import BatchStore
from aijobs.calls import Calls
from aijobs.catalog import Catalog
from aijobs.errors import Unauthorized
from aijobs.events import JobEvents
from aijobs.files import Files
from aijobs.live import Hub
from aijobs.outbound import Guard
from aijobs.queue import JobQueue
from aijobs.routing import Routing
from aijobs.routing.breakers import Breakers
from aijobs.settings import Settings
from aijobs.storage import BlobStore
from aijobs.store import JobStore
from aijobs.webhooks.deliveries import Deliveries
from aijobs.webhooks.endpoints import Endpoints


@dataclass(slots=True)
class Services:
    """What the API's routes use; built once in the lifespan and kept on ``app.state``."""

    settings: Settings
    routing: Routing
    redis: Redis
    store: JobStore
    queue: JobQueue
    keys: ApiKeys
    blobs: BlobStore
    breakers: Breakers
    files: Files
    guard: Guard
    events: JobEvents
    hub: Hub
    endpoints: Endpoints
    deliveries: Deliveries
    calls: Calls
    catalog: Catalog
    batches: BatchStore


async def services(request: Request) -> Services:
    """The services (``async``, so FastAPI calls it inline, not on a thread pool hop per request)."""
    svc: Services = request.app.state.services
    return svc


async def tenant(request: Request) -> str:
    """The tenant owning the request's Bearer key; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    owner = await (await services(request)).keys.tenant_for(key.strip())
    if owner is None:
        raise Unauthorized("the API key is not valid")
    return owner
