"""OpenAI's Batch API: ``/v1/batches`` over a ``purpose=batch`` file, run on the batch lane.

Lines run as jobs under the batch's feature (``background`` by default when it serves the endpoint's
job type, else the type's default feature), on the batch lane, a window at a time
(:mod:`aijobs.batchrun`). Each line is a job in the ledger with ``batch_id`` in its metadata.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from aijobs.api import jobbatches
from aijobs.api.deps import Services, services, tenant
from aijobs.api.openai import batchfile
from aijobs.api.openai.wire import OpenAIRequest, answer, parse
from aijobs.batches import Batch, BatchStatus, new_batch_id
from aijobs.errors import Conflict, InvalidRequest, NotFound

router = APIRouter(tags=["batches"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]


class BatchRequest(OpenAIRequest):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings", "/v1/rerank"]
    completion_window: str = "24h"
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = (
        Field(default=None, max_length=16)
    )
    #: aijobs: the feature whose route the lines take (default: ``background``).
    feature: str | None = Field(default=None, max_length=64)


@router.post(
    "/v1/batches", summary="Create a batch from an uploaded file (OpenAI Batch API) or from job inputs"
)
async def create(request: Request, svc: Svc, owner: Tenant) -> Response:
    raw = await request.body()
    with contextlib.suppress(orjson.JSONDecodeError):  # not JSON: the OpenAI parse below says so
        if isinstance(body := orjson.loads(raw), dict) and "inputs" in body:
            return answer((await jobbatches.create(svc, owner, body)).view())
    request_body = parse(BatchRequest, raw)
    window_h = jobbatches.window_hours(request_body.completion_window)
    record = await svc.files.get(request_body.input_file_id, owner)
    if record is None or record.purpose != "batch" or record.endpoint not in batchfile.JOB_TYPES:
        message = f"input_file_id: no batch file {request_body.input_file_id!r}"
        raise NotFound(message, param="input_file_id")
    if record.endpoint != request_body.endpoint:
        raise InvalidRequest(f"endpoint: the file's requests call {record.endpoint}", param="endpoint")
    job_type = batchfile.JOB_TYPES[request_body.endpoint]
    feature = jobbatches.batch_feature(svc, request_body.feature, job_type)
    now, window = time.time(), request_body.completion_window
    batch = Batch(
        new_batch_id(), owner, request_body.endpoint, record.id, window, feature.name, now,
        now + window_h * 3600, type=job_type, metadata=request_body.metadata or {}, total=record.lines or 0,
    )  # fmt: skip
    await jobbatches.start(svc, batch)
    return answer(batch.view())


async def _owned(svc: Services, batch_id: str, owner: str) -> Batch:
    batch = await svc.batches.get(batch_id, owner)
    if batch is None:
        raise NotFound(f"no batch {batch_id!r}", param="batch_id")
    return batch


@router.get("/v1/batches/{batch_id}", summary="A batch, with its progress")
async def get_batch(batch_id: str, svc: Svc, owner: Tenant) -> Response:
    return answer((await _owned(svc, batch_id, owner)).view())


@router.get("/v1/batches", summary="The caller's batches, newest first")
async def list_batches(
    svc: Svc,
    owner: Tenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    found, more = await svc.batches.page(owner, limit, after)
    data: list[dict[str, Any]] = [batch.view() for batch in found]
    page = {"object": "list", "data": data, "has_more": more}
    page |= {"first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
    return answer(page)


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch: no new lines start")
async def cancel(batch_id: str, svc: Svc, owner: Tenant) -> Response:
    batch = await _owned(svc, batch_id, owner)
    refused = await svc.batches.move(batch.id, BatchStatus.CANCELLING, cancelling_at=time.time())
    if refused is not None and refused is not BatchStatus.CANCELLING:
        raise Conflict(f"batch {batch.id} is already {refused.value}", param="batch_id")
    return answer((await _owned(svc, batch_id, owner)).view())  # cancelling, or already finishing
