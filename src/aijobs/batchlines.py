"""A batch's lines as jobs, and its jobs as result lines: one :class:`LineFormat` per kind of batch.

The batch's endpoint names its kind:

- OpenAI's Batch API (``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/rerank``): each line is an
  OpenAI request line (``custom_id``, ``body``) and each result is the line OpenAI's batches write
  (:mod:`aijobs.api.openai.batchfile`);
- native (``/v1/jobs``): each line is ``{"input": {...}}``, one job input of the batch's
  job type (image and speech included), and each result carries the line's ``index`` and the job's
  own fields. Media in a result is a signed URL that lives as long as the result file (at most
  :data:`MAX_URL_TTL_S`, an S3 presigned URL's limit).

Both kinds are checked in full when they are submitted, so turning a line into a job input here is
a decode, not a validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from aijobs.api.openai.batchfile import request_line, result_line, unrun_line
from aijobs.batches import NATIVE_ENDPOINT
from aijobs.jobs import Job
from aijobs.storage import BlobStore
from aijobs.views import signed_output

MAX_URL_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class LineJob:
    """What a line runs as: the job's input and the metadata that ties it to its line."""

    input: dict[str, Any]
    metadata: dict[str, str]


class LineFormat(Protocol):
    """Reads one kind of batch line and writes its result."""

    def job(self, raw: bytes, number: int) -> LineJob:
        """Line ``number`` (0-based, blank lines not counted) as a job's input and metadata."""
        ...

    async def result(self, job: Job) -> bytes:
        """A finished line job as a line of the batch's output or error file."""
        ...

    def unrun(self, batch_id: str, number: int, raw: bytes, code: str, message: str) -> bytes:
        """A line that never ran (the batch was cancelled or expired first), for the error file."""
        ...


class OpenAILines:
    """OpenAI's batch file lines and result lines."""

    def job(self, raw: bytes, number: int) -> LineJob:
        line = request_line(raw)
        return LineJob(line.input.model_dump(mode="json", exclude_none=True), {"custom_id": line.custom_id})

    async def result(self, job: Job) -> bytes:
        return result_line(job)

    def unrun(self, batch_id: str, number: int, raw: bytes, code: str, message: str) -> bytes:
        custom_id = str(orjson.loads(raw).get("custom_id", ""))
        return unrun_line(batch_id, number, custom_id, code, message)


@dataclass(frozen=True, slots=True)
class JobLines:
    """Native lines: one job input each; results are the job's status, output, error and usage."""

    blobs: BlobStore
    url_ttl_s: int

    def job(self, raw: bytes, number: int) -> LineJob:
        return LineJob(orjson.loads(raw)["input"], {"batch_index": str(number)})

    async def result(self, job: Job) -> bytes:
        line = {
            "index": int(job.metadata.get("batch_index", "-1")), "job_id": job.id,
            "status": job.status.value, "output": await signed_output(job.output, self.blobs, self.url_ttl_s),
            "error": job.error, "route": job.route, "usage": job.usage,
        }  # fmt: skip
        return orjson.dumps(line) + b"\n"

    def unrun(self, batch_id: str, number: int, raw: bytes, code: str, message: str) -> bytes:
        line = {"index": number, "job_id": None, "status": "canceled", "output": None,
                "error": {"code": code, "message": message}, "route": None, "usage": None}  # fmt: skip
        return orjson.dumps(line) + b"\n"


def line_format(endpoint: str, blobs: BlobStore, file_ttl_s: int) -> LineFormat:
    """The format of a batch calling ``endpoint``."""
    if endpoint == NATIVE_ENDPOINT:
        return JobLines(blobs, min(file_ttl_s, MAX_URL_TTL_S))
    return OpenAILines()
