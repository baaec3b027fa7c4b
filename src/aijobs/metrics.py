"""Prometheus metrics for the whole deployment, rendered from Redis by any API process.

Every counter here is kept in Redis by the ledger (:mod:`aijobs.ledger`), the breakers and the
lanes, so one scrape of any API process shows all workers, and adding a worker needs no new scrape
target. Labels are bounded by the routing policy (feature, type, provider, model, lane, status);
tenants and job ids never become labels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from aijobs.histogram import upper_ms
from aijobs.keys import Keys
from aijobs.ledger import day_of, parse_cell_field
from aijobs.queue import queue_name
from aijobs.queue.lanes import INFLIGHT_SUFFIX
from aijobs.queue.leases import COUNTS_SUFFIX
from aijobs.routing.breakers import Breakers
from aijobs.routing.policy import Routing

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "cooldown": 2, "open": 3}
INFLIGHT_FRESH_S = 15.0
_TOKENS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
_COUNTERS = {
    "cost_usd": ("aijobs_cost_usd_total", "Estimated cost of finished jobs in USD."),
    "retries": ("aijobs_retries_total", "Retries of a target within a job."),
    "fallbacks": ("aijobs_fallbacks_total", "Moves to a job's next target."),
    "cost_unknown": ("aijobs_cost_unknown_jobs_total", "Jobs whose target has no known price."),
}
#: The counters :mod:`aijobs.queue.leases` keeps per lane.
_LEASE_COUNTERS = {
    "renewed": ("aijobs_lease_renewals_total", "Leases of running jobs renewed by their live workers."),
    "redelivered": (
        "aijobs_lease_redeliveries_total",
        "Jobs delivered again because their worker stopped renewing the lease (died or stalled).",
    ),
    "lost": ("aijobs_lease_lost_total", "Runs stopped because their lease had passed to another worker."),
    "handed_back": ("aijobs_jobs_handed_back_total", "Unfinished jobs a stopping worker handed back."),
}
Labels = tuple[tuple[str, str], ...]
Series = dict[tuple[str, Labels], float]


def inflight_key(lane: str) -> str:
    return queue_name(lane) + INFLIGHT_SUFFIX


class _Families:
    """Metric families being assembled: family name → (type, help, samples)."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, Series]] = {}

    def add(
        self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float, suffix: str = ""
    ) -> None:
        """Add ``value`` to the sample ``name + suffix`` (``_bucket``, ``_sum``, … for histograms)."""
        series = self.families.setdefault(name, (kind, help_text, {}))[2]
        key = (name + suffix, tuple(labels.items()))
        series[key] = series.get(key, 0.0) + value

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, series) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for (sample, labels), value in series.items():
                lines.append(f"{sample}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(value)


async def render(redis: Redis, routing: Routing, breakers: Breakers) -> str:
    """The exposition text of every metric."""
    now = time.time()
    lanes = sorted({f.lane for f in routing.features.values()})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(Keys.usage_total())
        pipe.hgetall(Keys.spend(day_of(now)))
        for lane in lanes:
            pipe.zcount(queue_name(lane), "-inf", int(now * 1000))
            pipe.hgetall(inflight_key(lane))
            pipe.hgetall(queue_name(lane) + COUNTS_SUFFIX)
        rows = await pipe.execute()
    families = _Families()
    _jobs(families, rows[0])
    for feature, spent in sorted(rows[1].items()):
        labels = {"feature": feature.decode()}
        families.add("aijobs_budget_spent_usd", "gauge", "Estimated spend today (UTC).", labels, float(spent))
    for i, lane in enumerate(lanes):
        waiting, reports, leases = rows[2 + 3 * i : 5 + 3 * i]
        families.add(
            "aijobs_queue_depth", "gauge", "Jobs due and waiting for a worker.", {"lane": lane}, waiting
        )
        families.add(
            "aijobs_jobs_in_flight",
            "gauge",
            "Jobs running on workers.",
            {"lane": lane},
            _inflight(reports, now),
        )
        _leases(families, lane, leases)
    for target in await breakers.status():
        labels = {"provider": target["provider"], "model": target["model"]}
        help_text = "Breaker state: 0 closed, 1 half-open, 2 cooldown (429), 3 open."
        families.add("aijobs_breaker_state", "gauge", help_text, labels, BREAKER_STATES[target["state"]])
        families.add(
            "aijobs_breaker_window_calls",
            "gauge",
            "Calls in the breaker's window.",
            labels,
            target["window_calls"],
        )
    return families.render()


def _leases(families: _Families, lane: str, counts: dict[bytes, bytes]) -> None:
    for counter, (name, help_text) in _LEASE_COUNTERS.items():
        families.add(name, "counter", help_text, {"lane": lane}, float(counts.get(counter.encode(), 0)))


def _inflight(reports: dict[bytes, bytes], now: float) -> float:
    total = 0
    for value in reports.values():
        count, _, at = value.decode().partition(" ")
        if now - float(at or 0) < INFLIGHT_FRESH_S:
            total += int(count)
    return total


def _jobs(families: _Families, totals: dict[bytes, bytes]) -> None:
    histograms: dict[Labels, dict[int, float]] = {}
    latency_sums: dict[Labels, float] = {}
    for field, raw in totals.items():
        parsed = parse_cell_field(field.decode())
        if parsed is None:
            continue
        cell, metric = parsed
        value = float(raw)
        target = {"feature": cell["feature"], "provider": cell["provider"], "model": cell["model"]}
        if metric.startswith("status:"):
            labels: dict[str, Any] = {"type": cell["type"], **target, "status": metric[7:]}
            families.add("aijobs_jobs_total", "counter", "Finished jobs.", labels, value)
        elif metric in _TOKENS:
            labels = {**target, "kind": metric.removesuffix("_tokens")}
            families.add("aijobs_tokens_total", "counter", "Tokens used by finished jobs.", labels, value)
        elif metric in _COUNTERS:
            name, help_text = _COUNTERS[metric]
            families.add(name, "counter", help_text, target, value)
        elif metric.startswith("lat:"):
            key: Labels = (("feature", cell["feature"]),)
            hist = histograms.setdefault(key, {})
            hist[int(metric[4:])] = hist.get(int(metric[4:]), 0) + value
        elif metric == "latency_ms":
            key = (("feature", cell["feature"]),)
            latency_sums[key] = latency_sums.get(key, 0) + value
    name, help_text = "aijobs_job_duration_seconds", "Time jobs ran, claim to finish."
    for key, hist in histograms.items():
        labels = dict(key)
        total = sum(hist.values())
        for le in LATENCY_BUCKETS_S:
            count = sum(c for b, c in hist.items() if upper_ms(b) <= le * 1000)
            families.add(name, "histogram", help_text, {**labels, "le": repr(le)}, count, "_bucket")
        families.add(name, "histogram", help_text, {**labels, "le": "+Inf"}, total, "_bucket")
        families.add(name, "histogram", help_text, labels, latency_sums.get(key, 0) / 1000, "_sum")
        families.add(name, "histogram", help_text, labels, total, "_count")
