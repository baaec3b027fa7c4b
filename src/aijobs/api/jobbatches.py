"""Native batches: ``POST /v1/batches`` with a list of job inputs of any type instead of a file.

The body::

    {"type": "image", "feature": "images", "inputs": [{"prompt": "a red fox"}, ...],
     "completion_window": "24h", "metadata": {"run": "catalog"}}

``type`` or ``feature`` (or both, agreeing) says what the inputs are; without a feature the lines
take ``background`` when it serves the type, else the type's default feature. Every input is checked
as ``POST /v1/jobs`` would check it; bad ones are refused together, each in ``error.details`` by its
``index``. The inputs become the batch's input file (``{"input": ...}`` per line, endpoint
:data:`~aijobs.batches.NATIVE_ENDPOINT`) and run like any batch; the result files have one line per
input with its ``index`` (:class:`~aijobs.batchlines.JobLines`).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import orjson
from pydantic import Field, ValidationError

from aijobs.api.deps import Services
from aijobs.api.jobs import invalid_request, validate_job
from aijobs.batches import NATIVE_ENDPOINT, Batch, new_batch_id
from aijobs.errors import InvalidRequest
from aijobs.inputs import check_chat_images, check_image_ref
from aijobs.outbound import Names
from aijobs.queue import BATCH_LANE, RUN_BATCH, batch_tick_id
from aijobs.routing.policy import Feature
from aijobs.types import FEATURE_PATTERN, MAX_METADATA_KEYS, JobType
from aijobs.types.chat import ChatInput
from aijobs.types.common import Strict

#: The feature a batch's lines take when none is named (if it serves their job type).
DEFAULT_FEATURE = "background"
MAX_WINDOW_H = 7 * 24
#: Bad inputs listed in one answer; the message counts them all.
MAX_REPORTED = 100
_WINDOW = re.compile(r"([1-9][0-9]{0,2})h")

Metadata = dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]]


class JobBatchRequest(Strict):
    """A native batch: job inputs of one type, run under one feature."""

    type: JobType | None = None
    feature: str | None = Field(default=None, pattern=FEATURE_PATTERN)
    inputs: list[dict[str, Any]] = Field(min_length=1)
    completion_window: str = "24h"
    metadata: Metadata = Field(default_factory=dict, max_length=MAX_METADATA_KEYS)


async def create(svc: Services, owner: str, body: dict[str, Any]) -> Batch:
    """Check a native batch's body, store its inputs as its input file and start it."""
    try:
        request = JobBatchRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    window_h = window_hours(request.completion_window)
    feature = _feature(svc, request)
    limit = svc.settings.max_batch_lines
    if len(request.inputs) > limit:
        raise InvalidRequest(f"inputs: {len(request.inputs)} inputs; the limit is {limit}", param="inputs")
    lines = await _checked_lines(svc, owner, feature.type, request.inputs)
    batch_id, now = new_batch_id(), time.time()
    record = await svc.files.store(
        owner, "batch", f"{batch_id}_input.jsonl", b"".join(lines), "application/jsonl",
        lines=len(lines), endpoint=NATIVE_ENDPOINT,
    )  # fmt: skip
    batch = Batch(
        batch_id, owner, NATIVE_ENDPOINT, record.id, request.completion_window, feature.name, now,
        now + window_h * 3600, type=feature.type, metadata=request.metadata, total=len(lines),
    )  # fmt: skip
    await start(svc, batch)
    return batch


async def start(svc: Services, batch: Batch) -> None:
    """Save a new batch and queue its first driver tick."""
    await svc.batches.create(batch)
    await svc.queue.enqueue_task(RUN_BATCH, batch_tick_id(batch.id), (batch.id,), BATCH_LANE)


def _feature(svc: Services, request: JobBatchRequest) -> Feature:
    if request.feature is None and request.type is None:
        raise InvalidRequest("type: say which job type the inputs are (or name a feature)", param="type")
    return batch_feature(svc, request.feature, request.type)


async def _checked_lines(
    svc: Services, owner: str, job_type: str, inputs: list[dict[str, Any]]
) -> list[bytes]:
    """Each input as its line; a 400 listing every bad input (by index) otherwise."""
    lines: list[bytes] = []
    problems: list[dict[str, Any]] = []
    names: Names = {}  # each host resolved once for the whole batch
    for index, item in enumerate(inputs):
        try:  # as POST /v1/jobs checks its input: errors name input.<field>
            checked = validate_job({"type": job_type, "input": item}).input
            if (image := getattr(checked, "image", None)) is not None:
                await check_image_ref(image, owner, svc.files, svc.guard, names=names)
            if isinstance(checked, ChatInput):
                await check_chat_images(checked, svc.guard, param_prefix="input.", names=names)
        except InvalidRequest as error:
            where = (error.param or "input").removeprefix("input")
            message = error.message.removeprefix(f"{error.param}: ") if error.param else error.message
            problems.append({"index": index, "param": f"inputs.{index}{where}", "message": message})
            continue
        job_input = checked.model_dump(mode="json", by_alias=True, exclude_none=True)
        lines.append(orjson.dumps({"input": job_input}) + b"\n")  # as JobLines reads it
    if problems:
        first = problems[0]
        raise InvalidRequest(
            f"inputs: {len(problems)} bad input(s); the first, {first['param']}: {first['message']}",
            param=first["param"], details=problems[:MAX_REPORTED],
        )  # fmt: skip
    return lines


def window_hours(window: str) -> int:
    """A ``completion_window`` (``"24h"``) in hours; a 400 unless it is 1 to :data:`MAX_WINDOW_H`."""
    match = _WINDOW.fullmatch(window)
    if match is None or int(match[1]) > MAX_WINDOW_H:
        raise InvalidRequest(
            f"completion_window: hours, like '24h' (at most {MAX_WINDOW_H}h)", param="completion_window"
        )
    return int(match[1])


def batch_feature(svc: Services, name: str | None, job_type: str | None) -> Feature:
    """The feature a batch's lines take: ``name``, which must serve ``job_type`` (when given), or by
    default ``background`` when it serves the type, else the type's default feature."""
    features = svc.routing.features
    if name is None:
        assert job_type is not None
        default = features.get(DEFAULT_FEATURE)
        return default if default and default.type == job_type else svc.routing.feature_for(job_type, None)
    found = features.get(name)
    if found is None:
        raise InvalidRequest(f"feature: no feature {name!r}", param="feature")
    if job_type is not None and found.type != job_type:
        raise InvalidRequest(
            f"feature: {name!r} serves {found.type} requests, not {job_type}", param="feature"
        )
    return found
