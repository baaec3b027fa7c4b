"""The ledger: one usage record per finished job, with its attempts, and the aggregates read from it.

A job's ledger entry is written by the same Lua script as its terminal status change
(:meth:`aijobs.store.JobStore.transition`), so a job is never finished without its record or
counted twice. The entry is three things:

- the record, appended to the day's stream ``ledger:{day}`` (kept ``records_days``, exported to the
  blob store as JSONL, see :mod:`aijobs.usage`);
- counters added to the day's aggregate hash ``usage:{day}`` (kept ``retention_days``) and to the
  all-time ``usage:total`` (what ``/metrics`` exposes), one *cell* per (tenant, feature, type,
  provider, model), so any grouping is a sum over cells at read time. A batch's line jobs have
  cells of their own in the day's hash, with the batch as a sixth part (all-time cells leave it out:
  batches come and go, and that hash is kept forever);
- the job's estimated cost added to its feature's spend for the day (budgets).

Days are UTC. Counters are plain numbers; latencies are counted in :mod:`aijobs.histogram` buckets.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from aijobs.histogram import bucket_of
from aijobs.jobs import Job, JobStatus
from aijobs.keys import Keys

CELL_SEP = "\x1f"
METRIC_SEP = "\x1e"
CELL_FIELDS = ("tenant", "feature", "type", "provider", "model", "batch")
SPEND_TTL_S = 3 * 24 * 3600
_BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
_TOKENS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def day_of(ts_s: float) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``."""
    return _day(int(ts_s // 86_400))


@functools.lru_cache(maxsize=64)
def _day(days_since_epoch: int) -> str:  # every finished job asks; formatting a date each time showed
    return datetime.fromtimestamp(days_since_epoch * 86_400, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Entry:
    """What one finished job adds to the ledger (see the module docstring)."""

    day: str
    record: dict[str, Any]
    #: The day's cell (with the batch) and the all-time cell (without: it is kept forever).
    cell: str
    total_cell: str
    #: (metric, amount) added to both cells.
    increments: list[tuple[str, float]]
    feature: str
    cost_usd: float

    def keys(self) -> list[str]:
        return [
            Keys.ledger(self.day), Keys.usage(self.day), Keys.usage_total(), Keys.spend(self.day),
        ]  # fmt: skip

    def args(self, records_ttl_s: int, usage_ttl_s: int) -> list[Any]:
        flat: list[Any] = [orjson.dumps(self.record), records_ttl_s, usage_ttl_s, self.feature]
        flat += [repr(self.cost_usd), SPEND_TTL_S]
        # Whole counts first (HINCRBY), then fractional ones (HINCRBYFLOAT, several times slower).
        whole = [(name, amount) for name, amount in self.increments if type(amount) is int]
        flat += [len(whole), self.cell, self.total_cell]
        for name, count in whole:
            flat += [name, count]
        for name, amount in self.increments:
            if type(amount) is not int:
                flat += [name, repr(amount)]
        return flat


def route_tried(attempts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A failed job's ``route``: the last target tried and every target tried, in order (as a
    finished job's route has them), so a record shows which fallback path failed."""
    if not attempts:
        return None
    last = attempts[-1]
    tried = dict.fromkeys(f"{a['provider']}:{a['model']}" for a in attempts)
    return {"provider": last["provider"], "model": last["model"], "fallback_path": list(tried)}


def fallback_path(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets tried, in order, each with its number of attempts and its last outcome."""
    steps: dict[str, dict[str, Any]] = {}
    for attempt in attempts:
        target = f"{attempt['provider']}:{attempt['model']}"
        step = steps.setdefault(target, {"target": target, "attempts": 0})
        step["attempts"] += 1
        step["outcome"] = attempt.get("error_code") or attempt.get("outcome", "ok")
    return list(steps.values())


def entry(
    job: Job,
    status: JobStatus,
    *,
    attempts: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    target: tuple[str, str] | None = None,
    error_code: str | None = None,
    finished_at: float | None = None,
) -> Entry:
    """The ledger entry of ``job`` finishing as ``status``.

    ``target`` is the (provider, model) that answered, else the last one tried; ``usage`` carries
    ``cost_usd`` (``None`` when unknown).
    """
    finished_at = finished_at or time.time()
    usage = usage or {}
    last = attempts[-1] if attempts else {}
    provider, model = target or (last.get("provider", ""), last.get("model", ""))
    path = fallback_path(attempts)
    started = job.started_at
    latency_ms = (finished_at - started) * 1000 if started else None
    cost = usage.get("cost_usd")
    # An estimate that counted nothing is an unknown cost, not a free job.
    consumed = any(usage.get(name) for name in (*_TOKENS, "units")) or bool(usage.get("estimated"))
    record: dict[str, Any] = {
        "record": "job", "id": job.id, "tenant": job.tenant, "feature": job.feature, "type": job.type,
        "lane": job.lane, "status": status.value, "provider": provider, "model": model,
        "created_at": job.created_at, "started_at": started, "finished_at": finished_at,
        "queue_ms": _ms(started - job.created_at) if started else None,
        "latency_ms": round(latency_ms, 3) if latency_ms is not None else None,
        "total_ms": _ms(finished_at - job.created_at), "ttft_ms": last.get("ttft_ms"),
        **{name: int(usage.get(name) or 0) for name in _TOKENS}, "units": float(usage.get("units") or 0),
        "cost_usd": cost, "cost_known": cost is not None or not consumed, "error_code": error_code,
        "attempts": len(attempts), "retries": len(attempts) - len(path),
        "fallbacks": max(0, len(path) - 1), "fallback_path": path, "runs": job.runs,
        "attempt_records": attempts, "batch_id": _batch_of(job),
    }  # fmt: skip
    total_cell = CELL_SEP.join((job.tenant, job.feature, job.type, provider, model))
    cell = (
        total_cell + CELL_SEP + record["batch_id"] + METRIC_SEP
        if record["batch_id"]
        else total_cell + METRIC_SEP
    )
    counts: dict[str, float] = {"jobs": 1, f"status:{status.value}": 1}
    for name in (*_TOKENS, "units"):
        if record[name]:
            counts[name] = record[name]
    if cost:
        counts["cost_usd"] = cost
    if not record["cost_known"]:
        counts["cost_unknown"] = 1
    if record["retries"]:
        counts["retries"], counts["retried"] = record["retries"], 1
    if record["fallbacks"]:
        counts["fallbacks"], counts["fell_back"] = record["fallbacks"], 1
    if latency_ms is not None:
        counts[f"lat:{bucket_of(latency_ms)}"] = 1
        counts["latency_ms"] = round(latency_ms, 3)
    increments = list(counts.items())
    return Entry(
        day_of(finished_at),
        record,
        cell,
        total_cell + METRIC_SEP,
        increments,
        job.feature,
        float(cost or 0.0),
    )


def _batch_of(job: Job) -> str:
    """The batch a line job runs for (callers cannot set ``batch_id``: see ``RESERVED_METADATA``);
    checked again here, since the id becomes part of a usage cell."""
    batch_id = job.metadata.get("batch_id", "")
    return batch_id if job.lane == "batch" and _BATCH_ID.fullmatch(batch_id) else ""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def parse_cell_field(field: str) -> tuple[dict[str, str], str] | None:
    """A usage hash field back into its cell ({tenant, feature, ...}) and metric name."""
    cell, sep, metric = field.partition(METRIC_SEP)
    parts = cell.split(CELL_SEP)
    if len(parts) == len(CELL_FIELDS) - 1:
        parts.append("")  # not a batch's (and every all-time cell)
    if not sep or len(parts) != len(CELL_FIELDS):
        return None
    return dict(zip(CELL_FIELDS, parts, strict=True)), metric
