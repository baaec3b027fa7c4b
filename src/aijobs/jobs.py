"""The job record: status, the terminal set, allowed transitions, ids and timestamps. No I/O here.

A job moves ``queued → running → succeeded | failed | canceled``; ``queued → canceled`` is allowed
too. Every transition in Redis is compare-and-set against the status this module says it must have
come from (see :mod:`aijobs.store`), so two workers can never both finish the same job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

#: to-status → the statuses it may come from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),  # a job-level requeue
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _encode_id(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "job_" + "".join(reversed(chars))


def new_job_id(now_ms: int | None = None) -> str:
    """``job_`` + 26 Crockford base32 chars: 48 bits of milliseconds, then 80 random bits.

    Ids sort by creation time, which is what cursor pagination over a tenant's jobs relies on.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return _encode_id((ms << 80) | int.from_bytes(os.urandom(10), "big"))


class JobIds:
    """Job ids that also sort in creation order within one millisecond, from one process.

    Like a monotonic ULID: a second id in the same millisecond is the previous one plus one.
    """

    def __init__(self) -> None:
        self._last = 0

    def new(self, now_ms: int) -> str:
        value = (now_ms << 80) | int.from_bytes(os.urandom(10), "big")
        if value >> 80 <= self._last >> 80:
            value = self._last + 1
        self._last = value
        return _encode_id(value)


def is_job_id(text: str) -> bool:
    """True when ``text`` has the shape of a job id (cheap check before touching Redis)."""
    return len(text) == 30 and text.startswith("job_") and all(c in _CROCKFORD for c in text[4:])


def iso(ts_s: float | None) -> str | None:
    """Epoch seconds → RFC 3339 UTC with milliseconds (``None`` stays ``None``)."""
    if ts_s is None:
        return None
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Job:
    """A job record as stored. Timestamps are epoch seconds; JSON-ish fields are plain data."""

    id: str
    tenant: str
    type: str
    feature: str
    lane: str
    status: JobStatus
    created_at: float
    input: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    route: dict[str, Any] | None = None
    runs: int = 0
    #: Set on the first run; a requeued job keeps it, so requeues never extend a job's deadline.
    deadline_at: float | None = None
    requeues: int = 0
    #: A media job's long-running provider task: ``{"state": "submitting"}`` while submitting, then
    #: the provider, model, task id and what polling needs (see :mod:`aijobs.polling`).
    task: dict[str, Any] | None = None
    #: The job's own webhook: ``{"url", "events"}`` (signed with the tenant's job-webhook secret).
    webhook: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL
