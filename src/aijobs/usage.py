"""Reading the ledger: usage aggregates by feature, model, provider, tenant, day, type or batch (jobs
outside any batch make the group ``""``), and the daily export.

Aggregates are sums over the cells of :mod:`aijobs.ledger`'s daily hashes, so a query costs one
``HGETALL`` per day in range whatever the traffic was. Latency quantiles come from bucket counts
(:mod:`aijobs.histogram`): within one bucket, about 19%, of the exact value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from aijobs.histogram import quantile
from aijobs.keys import Keys
from aijobs.ledger import parse_cell_field
from aijobs.storage import BlobStore, StoredBlob

GroupBy = Literal["feature", "model", "provider", "tenant", "day", "type", "batch"]
GROUPS: tuple[str, ...] = ("feature", "model", "provider", "tenant", "day", "type", "batch")
MAX_DAYS = 400
EXPORT_BATCH = 2_000
_SUMS = (
    "jobs", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "units", "cost_usd",
    "cost_unknown", "retries", "retried", "fallbacks", "fell_back",
)  # fmt: skip


def days_between(since: date, until: date) -> list[str]:
    """Every UTC day from ``since`` to ``until``, inclusive, as ``YYYY-MM-DD``."""
    count = (until - since).days + 1
    return [(since + timedelta(days=i)).isoformat() for i in range(count)]


async def usage(
    redis: Redis, *, group_by: str, since: date, until: date, tenant: str | None
) -> list[dict[str, Any]]:
    """Aggregates per group for the days ``since``..``until``; ``tenant=None`` spans every tenant."""
    groups: dict[str, dict[str, Any]] = {}
    days = days_between(since, until)
    async with redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(Keys.usage(day))
        hashes = await pipe.execute()
    for day, raw in zip(days, hashes, strict=True):
        for field, value in raw.items():
            parsed = parse_cell_field(field.decode())
            if parsed is None:
                continue
            cell, metric = parsed
            if tenant is not None and cell["tenant"] != tenant:
                continue
            key = day if group_by == "day" else _group_key(cell, group_by)
            _add(groups.setdefault(key, {"key": key, "latency": {}, "status": {}}), metric, float(value))
    return [_summary(g) for _, g in sorted(groups.items())]


def _group_key(cell: dict[str, str], group_by: str) -> str:
    if group_by == "model":
        return f"{cell['provider']}:{cell['model']}" if cell["provider"] else ""
    return cell[group_by]


def _add(group: dict[str, Any], metric: str, value: float) -> None:
    if metric.startswith("lat:"):
        bucket = int(metric[4:])
        group["latency"][bucket] = group["latency"].get(bucket, 0) + value
    elif metric.startswith("status:"):
        status = metric[7:]
        group["status"][status] = group["status"].get(status, 0) + value
    else:
        group[metric] = group.get(metric, 0) + value


def _summary(group: dict[str, Any]) -> dict[str, Any]:
    jobs = group.get("jobs", 0)
    status = group["status"]
    out: dict[str, Any] = {"key": group["key"]}
    for name in _SUMS:
        value = group.get(name, 0)
        out[name] = round(value, 9) if name == "cost_usd" else int(value)
    out["succeeded"] = int(status.get("succeeded", 0))
    out["failed"] = int(status.get("failed", 0))
    out["canceled"] = int(status.get("canceled", 0))
    out["error_rate"] = round(out["failed"] / jobs, 4) if jobs else None
    out["retry_rate"] = round(out.pop("retried") / jobs, 4) if jobs else None
    out["fallback_rate"] = round(out.pop("fell_back") / jobs, 4) if jobs else None
    out["cost_unknown_jobs"] = out.pop("cost_unknown")
    # A total that leaves out jobs whose price is unknown must not pass for the whole cost.
    out["cost_known"] = out["cost_unknown_jobs"] == 0
    out["latency_p50_ms"] = quantile(group["latency"], 0.5)
    out["latency_p95_ms"] = quantile(group["latency"], 0.95)
    return out


async def records(redis: Redis, day: str, batch: int = EXPORT_BATCH) -> AsyncIterator[dict[str, Any]]:
    """The day's job records in the order they finished, read ``batch`` at a time."""
    start = "-"
    key = Keys.ledger(day)
    while True:
        rows = await redis.xrange(key, min=start, max="+", count=batch)
        for _entry_id, fields in rows:
            yield orjson.loads(fields[b"r"])
        if len(rows) < batch:
            return
        start = "(" + rows[-1][0].decode()


async def _jsonl(redis: Redis, day: str) -> AsyncIterator[bytes]:
    async for record in records(redis, day):
        attempts = record.pop("attempt_records", [])
        lines = [orjson.dumps(record)]
        for n, attempt in enumerate(attempts):
            lines.append(orjson.dumps({"record": "attempt", "job_id": record["id"], "n": n, **attempt}))
        yield b"\n".join(lines) + b"\n"


def export_key(day: str) -> str:
    return f"ledger/{day}.jsonl"


async def export_day(redis: Redis, blobs: BlobStore, day: str) -> StoredBlob:
    """Write ``day``'s records to ``ledger/{day}.jsonl`` in the blob store, streamed; mark it done.

    Each job is one ``"record": "job"`` line followed by one ``"record": "attempt"`` line per attempt.
    Exporting a day again rewrites the file with whatever records are still kept.
    """
    stored = await blobs.put(export_key(day), _jsonl(redis, day), "application/x-ndjson")
    await redis.set(Keys.ledger_exported(day), stored.sha256, ex=MAX_DAYS * 86400)
    return stored
