"""Following live, as server-sent events: a job's events, and a batch's progress.

``GET /v1/jobs/{id}/events``: a job's events until its terminal one.

Each event is ``id: <event id>``, ``event: <type>`` and ``data: {type, id, timestamp, data}`` where
``data`` is the job object as of the event (the same payload a webhook carries). A client that
reconnects with ``Last-Event-ID`` gets only what came after; without it, the job's history first.
The stream ends after ``job.succeeded``, ``job.failed`` or ``job.canceled``; a comment line every
15 s keeps idle connections (and proxies) open.

``GET /v1/batches/{id}/events``: the batch object each time it changes: ``event: batch.<status>``
when its status moves, ``event: batch.progress`` when more lines have finished (at most once per
driver tick). The first frame is the batch as it is; the stream ends after its ending
(``batch.completed``, ``batch.failed``, ``batch.expired`` or ``batch.cancelled``). A reconnecting
client simply gets the batch as it is then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from aijobs.api.deps import Services, services, tenant
from aijobs.batches import TERMINAL as BATCH_TERMINAL
from aijobs.batches import BatchStatus
from aijobs.errors import InvalidRequest, NotFound
from aijobs.events import Event, is_event_id
from aijobs.jobs import TERMINAL, Job, is_job_id, iso
from aijobs.webhooks.dispatch import event_payload

router = APIRouter(tags=["events"])
KEEPALIVE_S = 15.0
RECONNECT_MS = 2000


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Follow a job live (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def follow(
    job_id: str,
    svc: Annotated[Services, Depends(services)],
    owner: Annotated[str, Depends(tenant)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    if last_event_id is not None and not is_event_id(last_event_id):
        raise InvalidRequest("Last-Event-ID: not an event id from this stream", param="Last-Event-ID")
    job = await svc.store.get(job_id, owner) if is_job_id(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id!r}", param="id")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _stream(svc, job_id, last_event_id), media_type="text/event-stream", headers=headers
    )


async def _stream(svc: Services, job_id: str, cursor: str | None) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    async with svc.hub.follow(job_id) as woken:
        while True:
            woken.clear()
            # The status first: a job that ends between the two reads still has its event in the stream.
            status = await svc.store.status(job_id)
            events = await svc.events.after(job_id, cursor)
            if events:
                job = await svc.store.get(job_id)
                if job is None:
                    return
                for event in events:
                    yield await _frame(svc, job, event)
                    cursor = event.id
                    if event.terminal:
                        return
            elif status in (*TERMINAL, None):
                return  # resumed after the terminal event (or the record expired): nothing more will come
            try:
                await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"


async def _frame(svc: Services, job: Job, event: Event) -> bytes:
    payload = await event_payload(job, event, event.id, svc.blobs, svc.settings.blob_url_ttl_s)
    return b"id: " + event.id.encode() + b"\nevent: " + event.type.encode() + b"\ndata: " + payload + b"\n\n"


@router.get(
    "/v1/batches/{batch_id}/events",
    summary="Follow a batch's progress live (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def follow_batch(
    batch_id: str,
    svc: Annotated[Services, Depends(services)],
    owner: Annotated[str, Depends(tenant)],
) -> StreamingResponse:
    if await svc.batches.get(batch_id, owner) is None:
        raise NotFound(f"no batch {batch_id!r}", param="batch_id")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_batch_stream(svc, batch_id), media_type="text/event-stream", headers=headers)


async def _batch_stream(svc: Services, batch_id: str) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    sent: tuple[BatchStatus, int, int] | None = None
    async with svc.hub.follow(batch_id) as woken:
        while True:
            woken.clear()
            batch = await svc.batches.get(batch_id)
            if batch is None:
                return
            state = (batch.status, batch.completed, batch.failed)
            if state != sent:
                moved = sent is None or sent[0] is not batch.status
                kind = f"batch.{batch.status.value}" if moved else "batch.progress"
                told = {"type": kind, "timestamp": iso(time.time()), "data": batch.view()}
                yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(told) + b"\n\n"
                sent = state
            if batch.status in BATCH_TERMINAL:
                return
            try:
                await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
