"""The jobs API: submit (optionally waiting for the result), fetch, list, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError

from aijobs import ledger
from aijobs.api.deps import Services, services, tenant
from aijobs.errors import Canceled, Conflict, InvalidRequest, NotFound
from aijobs.inputs import check_chat_images, check_image_ref, check_url
from aijobs.jobs import TERMINAL, Job, JobStatus, is_job_id
from aijobs.queue import delivery, poll_id
from aijobs.store import IdempotencyConflict
from aijobs.types import JOB_TYPES, JobRequest
from aijobs.types.chat import ChatInput
from aijobs.views import job_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_REQUEST = TypeAdapter[JobRequest](JobRequest)
#: ``Prefer: wait=N`` waits at most this long (RFC 7240).
MAX_WAIT_S = 60
#: A waiting request re-reads the status this often even without a wake-up (a lost pub/sub message).
RECHECK_S = 5.0
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([^\s,;\"]*)")
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]


def _json(payload: Any, status_code: int) -> Response:
    return Response(orjson.dumps(payload), status_code, media_type="application/json")


def request_schema(ref_template: str) -> dict[str, Any]:
    """The JSON schema of a ``POST /v1/jobs`` body, for the OpenAPI document."""
    return _REQUEST.json_schema(ref_template=ref_template)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the caller wrote it: ``input.messages.0.content``.

    Pydantic adds its own steps to locations: the discriminator's value (``chat``), the union member
    tried (``str``, ``list[...]``) and markers such as ``[key]``; a caller never wrote those.
    """
    parts = []
    for i, step in enumerate(loc):
        if isinstance(step, int):
            parts.append(str(step))
        elif (i == 0 and step in JOB_TYPES) or "[" in step or step in _PYDANTIC_STEPS:
            continue
        else:
            parts.append(step)
    return ".".join(parts)


_PYDANTIC_STEPS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "function-after"})


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """A body's first validation error as the caller's error, naming the field as they wrote it."""
    err = _telling(exc.errors())
    param = field_path(err["loc"]) or None
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "json_invalid":
        message, param = "the body is not valid JSON", None
    elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(err["ctx"]["discriminator"]).strip("'")
        param = f"{param}.{tag}" if param else tag
        expected = str(err["ctx"].get("expected_tags", "")).replace("'", "")
        message = f"must be one of: {expected}" if expected else "is required"
    elif param is None and err["type"] in ("dict_type", "model_type", "model_attributes_type"):
        message = "the body must be a JSON object"
    return InvalidRequest(f"{param}: {message}" if param else message, param=param)


def _telling(errors: list[Any]) -> Any:
    """The error to report: the first, unless it is one branch of a union (``content`` as a string),
    when the branch that got furthest into the value says more."""
    first = errors[0]
    if len(errors) == 1 or not first["loc"] or first["loc"][-1] not in _PYDANTIC_STEPS:
        return first
    return max(errors[1:], key=lambda err: len(err["loc"]))


def validate_job(fields: dict[str, Any]) -> JobRequest:
    """Validate a ``POST /v1/jobs`` body already decoded; the error names the first offending field."""
    try:
        return _REQUEST.validate_python(fields)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def parse_job_request(body: bytes) -> JobRequest:
    """Validate a ``POST /v1/jobs`` body; the error names the first offending field."""
    try:
        return _REQUEST.validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


@router.post("", status_code=202, summary="Submit a job")
async def submit(
    request: Request,
    svc: Svc,
    owner: Tenant,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    prefer: Annotated[str | None, Header(description="`wait=N` (N ≤ 60): the finished job inline.")] = None,
) -> Response:
    """Validate, write the record, enqueue its id. ``Idempotency-Key`` makes retries safe.

    With ``Prefer: wait=N`` the answer is the finished job (200) if it ends within N seconds, else
    the usual 202 with the job as it is then.
    """
    wait_s = parse_wait(prefer)
    job_request = parse_job_request(await request.body())
    feature = svc.routing.feature_for(job_request.type, job_request.feature)
    image = getattr(job_request.input, "image", None)
    if image is not None:  # a file that isn't the caller's, a URL the worker would refuse: 422 now
        await check_image_ref(image, owner, svc.files, svc.guard)
    if isinstance(job_request.input, ChatInput):  # a provider fetches these itself: the same rules
        await check_chat_images(job_request.input, svc.guard, param_prefix="input.")
    webhook = None
    if job_request.webhook is not None:
        webhook = job_request.webhook.model_dump(mode="json")
        await _check_webhook(svc, owner, webhook["url"])
    idempotency = None
    if idempotency_key is not None:  # only then is the canonical body needed, to compare bodies
        canonical = job_request.model_dump_json(by_alias=True, exclude_none=True).encode()
        key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()
        idempotency = (key_hash, hashlib.sha256(canonical).hexdigest())
    try:
        created = await svc.store.create(
            tenant=owner,
            type=job_request.type,
            feature=feature.name,
            lane=feature.lane,
            input=job_request.input.model_dump(mode="json", by_alias=True, exclude_none=True),
            metadata=job_request.metadata,
            idempotency=idempotency,
            deliver=delivery,
            webhook=webhook,
        )
    except IdempotencyConflict as exc:
        raise Conflict(
            f"Idempotency-Key was already used with a different body (job {exc.job_id})",
            param="Idempotency-Key",
        ) from None
    job = created.job
    if wait_s and not job.terminal:
        job = await wait_for_end(svc, job, wait_s)
    view = await job_view(job, svc.blobs, svc.settings.blob_url_ttl_s)
    response = _json(view, 202 if created.created and not job.terminal else 200)
    if wait_s:
        response.headers["Preference-Applied"] = f"wait={wait_s:g}"
    return response


def parse_wait(prefer: str | None) -> float:
    """Seconds from a ``Prefer`` header's ``wait=N`` (0 when absent); 422 when it is not 0 to 60."""
    match = _WAIT.search(prefer or "")
    if match is None:
        return 0.0
    try:
        wait_s = float(match.group(1))
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidRequest(
            f"Prefer: wait must be a number of seconds from 0 to {MAX_WAIT_S}", param="Prefer"
        )
    return wait_s


async def wait_for_end(svc: Services, job: Job, wait_s: float) -> Job:
    """``job`` once it is terminal, or as it is after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    try:
        async with svc.hub.follow(job.id) as woken:
            while (remaining := deadline - time.monotonic()) > 0:
                woken.clear()
                status = await svc.store.status(job.id)
                if status is None or status in TERMINAL:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(remaining, RECHECK_S))
        return await svc.store.get(job.id) or job
    except (RedisError, OSError) as exc:
        # The job is written and queued: answer the usual 202 rather than an error a client would
        # retry into a second job.
        log.warning("Prefer: wait on %s stopped early: %s", job.id, exc)
        return job


async def _check_webhook(svc: Services, owner: str, url: str) -> None:
    """Refuse (422) a webhook that could never be delivered or signed."""
    await check_url(svc.guard, url, param="webhook.url", what="webhook.url: the URL cannot be called")
    if not await svc.endpoints.has_job_secret(owner):
        raise InvalidRequest(
            "webhook: job webhooks are signed with your job-webhook secret; create it first with "
            "POST /v1/webhooks/secret",
            param="webhook",
        )


async def _owned(svc: Services, job_id: str, owner: str) -> Job:
    job = await svc.store.get(job_id, owner) if is_job_id(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id!r}", param="id")
    return job


@router.get("/{job_id}", summary="Fetch a job")
async def get_job(job_id: str, svc: Svc, owner: Tenant) -> Response:
    job = await _owned(svc, job_id, owner)
    return _json(await job_view(job, svc.blobs, svc.settings.blob_url_ttl_s), 200)


@router.get("", summary="List jobs, newest first (summaries: fetch a job for its input and output)")
async def list_jobs(
    svc: Svc,
    owner: Tenant,
    status: JobStatus | None = None,
    type: Literal["chat", "embed", "rerank", "image", "speech", "video"] | None = None,
    feature: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="The cursor from the previous page.")] = None,
) -> Response:
    if after is not None and not is_job_id(after):
        raise InvalidRequest("after: not a job id cursor", param="after")
    filters = {k: v for k, v in {"status": status, "type": type, "feature": feature}.items() if v is not None}
    jobs, cursor = await svc.store.page(owner, limit=limit, after=after, filters=filters, summaries=True)
    ttl_s = svc.settings.blob_url_ttl_s
    data = [await job_view(job, svc.blobs, ttl_s, summary=True) for job in jobs]
    return _json({"object": "list", "data": data, "has_more": cursor is not None, "next_after": cursor}, 200)


@router.post("/{job_id}/cancel", summary="Cancel a job")
async def cancel(job_id: str, svc: Svc, owner: Tenant) -> Response:
    """A queued job never runs; a running one is marked canceled and its result discarded."""
    job = await _owned(svc, job_id, owner)
    fields = {"error": {"code": "gateway_canceled", "message": "canceled by the caller"}}
    # A queued job's ledger entry is written here; a running one's by its worker, which knows its cost.
    entry = ledger.entry(job, JobStatus.CANCELED, attempts=job.attempts, error_code=Canceled.code)
    queued = {JobStatus.QUEUED}
    result = await svc.store.transition(
        job.id, JobStatus.CANCELED, allowed_from=queued, fields=fields, want_record=True, ledger=entry
    )
    if result.previous is JobStatus.RUNNING:
        result = await svc.store.transition(job.id, JobStatus.CANCELED, fields=fields, want_record=True)
    if not result.ok or result.job is None:
        state = result.previous.value if result.previous else "gone"
        raise Conflict(f"job {job.id} is already {state}", param="id")
    if result.previous is JobStatus.QUEUED:
        await svc.queue.discard(job.id, job.lane)
    elif result.job.task and "id" in result.job.task:
        await svc.queue.wake(poll_id(job.id), job.lane)  # its poller cancels the task upstream now
    assert result.job.status in TERMINAL
    return _json(await job_view(result.job, svc.blobs, svc.settings.blob_url_ttl_s), 200)
