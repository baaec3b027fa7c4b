"""What operators and tenants watch: usage aggregates, provider health and Prometheus metrics."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Response

from aijobs import metrics, usage
from aijobs.api.deps import Services, services, tenant
from aijobs.errors import InvalidRequest
from aijobs.ledger import day_of

router = APIRouter()
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
DEFAULT_DAYS = 7


def _day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidRequest(f"{name}: expected a date, YYYY-MM-DD", param=name) from None


@router.get("/v1/usage", tags=["operations"])
async def get_usage(
    svc: Svc,
    owner: Tenant,
    group_by: Annotated[
        str, Query(description='feature | model | provider | tenant | day | type | batch (no batch: key "")')
    ] = "feature",
    since: Annotated[
        str | None, Query(description="First UTC day, YYYY-MM-DD (default: 6 days ago).")
    ] = None,
    until: Annotated[str | None, Query(description="Last UTC day, inclusive (default: today).")] = None,
) -> Response:
    """The caller's usage per group: jobs, tokens, cost, error, retry and fallback rates, p50/p95."""
    if group_by not in usage.GROUPS:
        raise InvalidRequest(f"group_by: one of {', '.join(usage.GROUPS)}", param="group_by")
    last = _day(until, "until", date.fromisoformat(day_of(time.time())))
    first = _day(since, "since", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise InvalidRequest("since: must not be after until", param="since")
    if (last - first).days >= usage.MAX_DAYS:
        raise InvalidRequest(f"since: at most {usage.MAX_DAYS} days per query", param="since")
    rows = await usage.usage(svc.redis, group_by=group_by, since=first, until=last, tenant=owner)
    body = {
        "object": "usage", "group_by": group_by, "since": first.isoformat(), "until": last.isoformat(),
        "data": rows,
    }  # fmt: skip
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/providers", tags=["operations"])
async def get_providers(svc: Svc, _: Tenant) -> Response:
    """Each target's breaker state, with its recent call count, error rate and p50 latency."""
    body = {"object": "list", "data": await svc.breakers.status()}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", tags=["operations"], include_in_schema=False)
async def get_metrics(svc: Svc) -> Response:
    """Prometheus exposition of the whole deployment (read from Redis)."""
    text = await metrics.render(svc.redis, svc.routing, svc.breakers)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
