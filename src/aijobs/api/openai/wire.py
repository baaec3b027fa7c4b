"""What every OpenAI-compatible route shares: parsing a body, the call's headers, answers and errors."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Response
from pydantic import BaseModel, Field, ValidationError

from aijobs.api.errors import aijobs_error_response
from aijobs.api.jobs import invalid_request
from aijobs.calls import Call
from aijobs.errors import InvalidRequest
from aijobs.jobs import Job
from aijobs.types import checked_metadata
from aijobs.types.common import Strict

M = TypeVar("M", bound=BaseModel)


class OpenAIRequest(Strict):
    """What every OpenAI request may carry: ``user`` (see :func:`metadata`)."""

    user: str | None = Field(default=None, max_length=512)


def parse(model: type[M], body: bytes) -> M:
    """Validate ``body`` as ``model``; a 400 naming the first offending field otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def parse_fields(model: type[M], fields: dict[str, Any], names: dict[str, str] | None = None) -> M:
    """Validate ``fields`` (``None`` ones left out) as ``model``; a 400 naming the caller's field,
    through ``names`` (ours → the caller's) where the two differ."""
    try:
        return parse(model, orjson.dumps({k: v for k, v in fields.items() if v is not None}))
    except InvalidRequest as exc:
        param = exc.param or ""
        head, dot, rest = param.partition(".")
        theirs = (names or {}).get(head, head) + dot + rest
        raise InvalidRequest(exc.message.replace(param, theirs, 1), param=theirs or None) from None


def metadata(user: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The job's metadata: the caller's own (chat has some), plus OpenAI's ``user`` when given (kept
    here, never sent to a provider)."""
    try:
        found = dict(checked_metadata(extra or {}))
    except ValueError as exc:
        raise InvalidRequest(f"metadata: {exc}", param="metadata") from None
    if user:
        found["user"] = user[:512]
    return found


def job_headers(job: Job) -> dict[str, str]:
    """What the answer's headers say about the job behind it: id, route, attempts and cost."""
    route = job.route or {}
    attempts = job.attempts
    headers = {
        "x-aijobs-job-id": job.id,
        "x-aijobs-feature": job.feature,
        "x-aijobs-attempts": str(len(attempts)),
    }
    path = list(dict.fromkeys(f"{a['provider']}:{a['model']}" for a in attempts))
    if path:
        headers["x-aijobs-fallback-path"] = ",".join(path)
    if route:
        headers["x-aijobs-provider"] = str(route.get("provider", ""))
        headers["x-aijobs-model"] = str(route.get("model", ""))
    cost = (job.usage or {}).get("cost_usd")
    if job.usage is not None:
        headers["x-aijobs-cost-usd"] = "unknown" if cost is None else f"{cost:.8f}"
    return headers


def answer(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), 200, headers=headers, media_type="application/json")


def failed(call: Call) -> Response:
    """A failed call as an error the OpenAI SDK understands, with the job's headers."""
    assert call.error is not None
    response = aijobs_error_response(call.error, openai=True, retry_after_s=call.retry_after_s)
    response.headers.update(job_headers(call.job))
    return response


def usage_block(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Our usage as OpenAI's ``usage`` object."""
    usage = usage or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(usage.get("cached_tokens") or 0)},
        "completion_tokens_details": {"reasoning_tokens": int(usage.get("reasoning_tokens") or 0)},
    }
