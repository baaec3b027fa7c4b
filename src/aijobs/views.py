"""How a job record is shown to its owner: timestamps as RFC 3339, blobs as signed, expiring URLs."""

from __future__ import annotations

import time
from typing import Any

from aijobs.jobs import Job, iso
from aijobs.storage import BlobStore

_BLOB_FIELDS = ("images", "videos", "audio")


async def job_view(job: Job, blobs: BlobStore, url_ttl_s: int, summary: bool = False) -> dict[str, Any]:
    """The public job object (DESIGN.md §4). A ``summary`` (list item) leaves out input and output,
    which can each be megabytes."""
    if summary:
        return {
            **_common(job),
            "error": job.error,
            "route": job.route,
            "usage": job.usage,
            "metadata": job.metadata,
        }
    return {
        **_common(job),
        "input": job.input,
        "output": await signed_output(job.output, blobs, url_ttl_s),
        "error": job.error,
        "route": job.route,
        "attempts": [{**a, "started_at": iso(a.get("started_at"))} for a in job.attempts],
        "usage": job.usage,
        "metadata": job.metadata,
    }


def _common(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "job",
        "type": job.type,
        "feature": job.feature,
        "status": job.status.value,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "requeues": job.requeues,
        "webhook": job.webhook,
        **_task_view(job.task),
    }


def _task_view(task: dict[str, Any] | None) -> dict[str, Any]:
    """A media job's provider task as its owner sees it: progress and the provider's own status."""
    if not task or "id" not in task:
        return {}
    view = {k: task.get(k) for k in ("provider", "model", "state", "raw_status", "polls")}
    if "upstream_canceled" in task:  # whether canceling the job also stopped (and unbilled) the task
        view["upstream_canceled"] = task["upstream_canceled"]
    view["id"] = task["id"]
    view["submitted_at"] = iso(task.get("submitted_at"))
    return {"progress": task.get("progress"), "task": view}


async def signed_output(output: dict[str, Any] | None, blobs: BlobStore, ttl_s: int) -> dict[str, Any] | None:
    """A job's output with each stored blob (image, audio, video) as a URL signed for ``ttl_s``."""
    if output is None or not any(name in output for name in _BLOB_FIELDS):
        return output
    expires_at = iso(time.time() + ttl_s)
    signed: dict[str, Any] = dict(output)
    for name in _BLOB_FIELDS:
        value = output.get(name)
        if isinstance(value, list):
            signed[name] = [await _blob_view(b, blobs, ttl_s, expires_at) for b in value]
        elif isinstance(value, dict):
            signed[name] = await _blob_view(value, blobs, ttl_s, expires_at)
    return signed


async def _blob_view(
    blob: dict[str, Any], blobs: BlobStore, ttl_s: int, expires_at: str | None
) -> dict[str, Any]:
    view = {k: v for k, v in blob.items() if k != "key"}
    view["url"] = await blobs.signed_url(blob["key"], ttl_s)
    view["expires_at"] = expires_at
    return view
