"""The webhooks API: endpoints, the job-webhook secret, a job's deliveries, replays, dead letters.

A secret is in the answer only where it is made: creating an endpoint, rotating one, and creating
or rotating the job-webhook secret. Nothing else ever returns it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from aijobs.api.deps import Services, services, tenant
from aijobs.errors import Conflict, NotFound
from aijobs.inputs import check_url
from aijobs.jobs import is_job_id, iso
from aijobs.queue import WEBHOOK_LANE, WEBHOOK_SEND
from aijobs.types import EndpointSpec
from aijobs.webhooks.deliveries import is_delivery_id
from aijobs.webhooks.dispatch import REPLAY
from aijobs.webhooks.endpoints import Endpoint, TooManyEndpoints

router = APIRouter(tags=["webhooks"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]


class EndpointRequest(EndpointSpec):
    """``POST /v1/webhooks``: a URL that receives the tenant's events (the four job events by default;
    a batch's endings, ``batch.completed`` and the rest, when named)."""

    description: str = Field(default="", max_length=256)


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code, media_type="application/json")


async def _endpoint(svc: Services, endpoint_id: str, owner: str) -> Endpoint:
    found = await svc.endpoints.get(endpoint_id, owner) if endpoint_id.startswith("wh_") else None
    if found is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", param="id")
    return found


@router.post("/v1/webhooks", status_code=201, summary="Register an endpoint (its secret is shown once)")
async def create_endpoint(body: EndpointRequest, svc: Svc, owner: Tenant) -> Response:
    await check_url(svc.guard, body.url, param="url", what="url: the URL cannot be called")
    try:
        endpoint, secret = await svc.endpoints.create(owner, body.url, list(body.events), body.description)
    except TooManyEndpoints as exc:
        raise Conflict(str(exc), param="url") from None
    return _json({**endpoint.view(), "secret": secret}, 201)


@router.get("/v1/webhooks", summary="List endpoints")
async def list_endpoints(svc: Svc, owner: Tenant) -> Response:
    data = [endpoint.view() for endpoint in await svc.endpoints.for_tenant(owner)]
    return _json({"object": "list", "data": data})


@router.get("/v1/webhooks/dead-letters", summary="Deliveries that failed every scheduled attempt")
async def dead_letters(svc: Svc, owner: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Response:
    data = [d.view() for d in await svc.deliveries.dead_letters(owner, limit)]
    return _json({"object": "list", "data": data})


@router.post("/v1/webhooks/secret", summary="Create or rotate the job-webhook secret (shown once)")
async def rotate_job_secret(svc: Svc, owner: Tenant) -> Response:
    ring, secret = await svc.endpoints.rotate_job_secret(owner)
    until = iso(ring.previous_until) if ring.previous else None
    return _json({"object": "webhook_secret", "secret": secret, "previous_secret_valid_until": until})


@router.get("/v1/webhooks/{endpoint_id}", summary="Fetch an endpoint")
async def get_endpoint(endpoint_id: str, svc: Svc, owner: Tenant) -> Response:
    return _json((await _endpoint(svc, endpoint_id, owner)).view())


@router.delete("/v1/webhooks/{endpoint_id}", summary="Delete an endpoint (its pending deliveries stop)")
async def delete_endpoint(endpoint_id: str, svc: Svc, owner: Tenant) -> Response:
    endpoint = await _endpoint(svc, endpoint_id, owner)
    await svc.endpoints.delete(endpoint)
    return _json({"id": endpoint.id, "object": "webhook_endpoint", "deleted": True})


@router.post("/v1/webhooks/{endpoint_id}/rotate", summary="Rotate an endpoint's secret (shown once)")
async def rotate_endpoint(endpoint_id: str, svc: Svc, owner: Tenant) -> Response:
    endpoint, secret = await svc.endpoints.rotate(await _endpoint(svc, endpoint_id, owner))
    return _json({**endpoint.view(), "secret": secret})


@router.post("/v1/webhooks/{endpoint_id}/enable", summary="Send to a disabled endpoint again")
async def enable_endpoint(endpoint_id: str, svc: Svc, owner: Tenant) -> Response:
    endpoint = await svc.endpoints.enable(await _endpoint(svc, endpoint_id, owner))
    return _json(endpoint.view())


async def _owned_job(svc: Services, job_id: str, owner: str) -> None:
    if not is_job_id(job_id) or await svc.store.get(job_id, owner) is None:
        raise NotFound(f"no job {job_id!r}", param="id")


@router.get("/v1/jobs/{job_id}/deliveries", tags=["jobs"], summary="A job's webhook deliveries and attempts")
async def job_deliveries(job_id: str, svc: Svc, owner: Tenant) -> Response:
    await _owned_job(svc, job_id, owner)
    data = [d.view() for d in await svc.deliveries.for_job(job_id) if d.tenant == owner]
    return _json({"object": "list", "data": data})


@router.post(
    "/v1/jobs/{job_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    tags=["jobs"],
    summary="Replay one delivery now (same webhook-id, one attempt)",
)
async def redeliver(job_id: str, delivery_id: str, svc: Svc, owner: Tenant) -> Response:
    await _owned_job(svc, job_id, owner)
    found = await svc.deliveries.get(delivery_id, owner) if is_delivery_id(delivery_id) else None
    if found is None or found.job_id != job_id:
        raise NotFound(f"no delivery {delivery_id!r} for job {job_id}", param="delivery_id")
    if found.endpoint_id is not None:
        endpoint = await svc.endpoints.get(found.endpoint_id, owner)
        if endpoint is None or endpoint.disabled_at is not None:
            state = "deleted" if endpoint is None else "disabled"
            raise Conflict(f"the endpoint {found.endpoint_id} is {state}", param="delivery_id")
    arq_id = f"send:{found.id}:{REPLAY}:{int(time.time() * 1000)}"
    await svc.queue.enqueue_task(WEBHOOK_SEND, arq_id, (found.id, REPLAY), WEBHOOK_LANE)
    return _json(found.view(), 202)
