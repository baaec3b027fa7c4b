"""The ``webhooks`` lane's two tasks: fan an event out into deliveries, and make one attempt.

Each attempt renders the payload from the job record as of the event (``{type, id, timestamp,
data}``, ``data`` being the job object; a batch's ending carries the batch object), signs it with
the destination's active secrets, and POSTs it through the outbound guard (DNS checked and pinned,
redirects not followed; 5 s to connect, 15 s in all). Then, in one script: the attempt is recorded
and, unless it was delivered (2xx), the destination is gone (410) or the schedule is spent
(dead-letter), the next attempt is enqueued after its delay (the longer of the schedule's and the
receiver's ``Retry-After``). A replay (``redeliver``) is one extra attempt that leaves the schedule
alone.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import httpx2
import orjson
from redis.asyncio import Redis

from aijobs.batches import BatchStore
from aijobs.events import BATCH_EVENTS, Event
from aijobs.jobs import Job, iso
from aijobs.keys import Keys
from aijobs.outbound import Guard, OutboundRefused
from aijobs.providers.http import retry_after_s
from aijobs.queue import WEBHOOK_LANE, WEBHOOK_SEND, task_delivery
from aijobs.routing.config import WebhookConfig
from aijobs.storage import BlobStore
from aijobs.store import JobStore, decode_job
from aijobs.views import job_view
from aijobs.webhooks.deliveries import Deliveries, WebhookDelivery, delivery_id, delivery_ttl_s
from aijobs.webhooks.endpoints import Endpoints
from aijobs.webhooks.signing import SecretRing, signed_headers

log = logging.getLogger(__name__)
USER_AGENT = "aijobs-webhooks/1"
REPLAY = "replay"
#: A webhook task delivered this many times without finishing (its worker keeps failing) stops.
MAX_TASK_TRIES = 5
GAVE_UP = "the delivery task failed repeatedly on our side; see the worker's log"


async def event_view(job: Job, event: Event, blobs: BlobStore, url_ttl_s: int) -> dict[str, Any]:
    """The job object as it was at ``event``.

    A record only holds its latest state; a job that has moved on since (a late ``job.running``)
    is shown with the event's status and without what came after: no output, error, usage or end.
    """
    if job.status is not event.status:
        job = dataclasses.replace(
            job, status=event.status, output=None, error=None, usage=None, finished_at=None,
            attempts=[a for a in job.attempts if (a.get("started_at") or 0) <= event.at],
        )  # fmt: skip
    view = await job_view(job, blobs, url_ttl_s)
    if event.progress is not None:
        view["progress"] = event.progress
    return view


async def event_payload(job: Job, event: Event, payload_id: str, blobs: BlobStore, url_ttl_s: int) -> bytes:
    """``{type, id, timestamp, data}``: what a webhook and a server-sent event both carry."""
    data = await event_view(job, event, blobs, url_ttl_s)
    return orjson.dumps({"type": event.type, "id": payload_id, "timestamp": iso(event.at), "data": data})


class Dispatcher:
    """Turns job events into signed deliveries (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        store: JobStore,
        blobs: BlobStore,
        guard: Guard,
        config: WebhookConfig,
        url_ttl_s: int,
    ) -> None:
        self.redis = redis
        self.store = store
        self.blobs = blobs
        self.guard = guard
        self.config = config
        self.url_ttl_s = url_ttl_s
        self.endpoints = Endpoints(redis, config.max_endpoints, config.rotation_overlap_s)
        self.batches = BatchStore(redis, store.job_ttl_s)
        self.deliveries = Deliveries(redis, delivery_ttl_s(config.schedule_s, store.job_ttl_s))
        # Apart from the providers' client: slow receivers never hold a connection a job needs.
        self.http = httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=16)
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def fan_out(self, job_id: str, event_id: str, event_type: str) -> int:
        """One delivery per destination that wants the event; returns how many were made.

        ``job_id`` is a batch's id for a batch's event: those go to the tenant's endpoints only."""
        destinations: list[tuple[str | None, str]] = []
        if event_type in BATCH_EVENTS:
            batch = await self.batches.get(job_id)
            if batch is None:
                return 0
            tenant = batch.tenant
        else:
            job, gone = await self._job(job_id)
            if job is None:
                return 0  # expired meanwhile: nothing left to tell
            tenant, hook = job.tenant, job.webhook
            if hook and event_type in hook["events"] and not gone:
                destinations.append((None, hook["url"]))
        if await self.redis.exists(Keys.tenant_endpoints(tenant)):
            endpoints = await self.endpoints.for_tenant(tenant)
            destinations += [(e.id, e.url) for e in endpoints if e.wants(event_type)]
        made = 0
        now = time.time()
        for endpoint_id, url in destinations:
            delivery = WebhookDelivery(
                delivery_id(job_id, event_id, endpoint_id or "job"), tenant, job_id, event_id, event_type,
                endpoint_id, url, now, next_at=now + self.config.schedule_s[0],
            )  # fmt: skip
            first = task_delivery(
                WEBHOOK_SEND, f"send:{delivery.id}:0", (delivery.id,), WEBHOOK_LANE, self.config.schedule_s[0]
            )
            made += await self.deliveries.create(delivery, first)
        return made

    async def send(self, delivery_id: str, mode: str = "") -> None:
        """Make one attempt at ``delivery_id`` (a scheduled one, or a ``replay``)."""
        replay = mode == REPLAY
        delivery = await self.deliveries.head(delivery_id)
        if delivery is None or (not replay and delivery.state != "pending"):
            return  # delivered, dead, disabled, or expired: a duplicate arq job has nothing to do
        body, gone = await self._payload(delivery)
        ring, stopped = await self._destination(delivery, gone)
        now = time.time()
        if ring is None:
            attempt = {"at": now, "status_code": None, "latency_ms": 0, "error": stopped}
            await self.deliveries.record(delivery, attempt, "disabled")
            return
        if body is None:
            attempt = {"at": now, "status_code": None, "latency_ms": 0, "error": "the record has expired"}
            await self.deliveries.record(delivery, attempt, "dead")
            return
        status, retry_after, error, latency_ms = await self._post(delivery, body, ring.active(now))
        attempt = {"at": now, "status_code": status, "latency_ms": latency_ms, "error": error}
        if replay:
            attempt["replay"] = True
        await self._settle(delivery, attempt, status, retry_after, replay)

    async def _post(
        self, delivery: WebhookDelivery, body: bytes, keys: list[str]
    ) -> tuple[int | None, float | None, str | None, float]:
        """``(status, retry-after s, error, latency ms)`` of one POST."""
        headers = signed_headers(delivery.id, int(time.time()), body, keys)
        headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
        started = time.perf_counter()
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            sent = await self.guard.post(
                self.http, delivery.url, content=body, headers=headers,
                connect_timeout_s=self.config.connect_timeout_s, timeout_s=self.config.timeout_s,
            )  # fmt: skip
            status = sent.status_code
            if sent.retry_after:
                retry_after = retry_after_s({"retry-after": sent.retry_after})
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except OutboundRefused as exc:
            error = f"refused: {exc}"
        except (TimeoutError, httpx2.TimeoutException):
            error = f"no answer within {self.config.timeout_s:g} s"
        except httpx2.HTTPError as exc:
            error = f"the connection failed ({type(exc).__name__})"
        except Exception as exc:  # whatever else a request can raise is this attempt's failure, not ours
            log.warning("webhook %s: the attempt raised %s", delivery.id, type(exc).__name__)
            error = f"the request could not be made ({type(exc).__name__})"
        return status, retry_after, error, round((time.perf_counter() - started) * 1000, 1)

    async def _settle(
        self,
        delivery: WebhookDelivery,
        attempt: dict[str, Any],
        status: int | None,
        retry_after: float | None,
        replay: bool,
    ) -> None:
        if status is not None and 200 <= status < 300:
            await self.deliveries.record(delivery, attempt, "delivered")
            return
        if status == 410:  # the receiver says it is gone for good: stop sending it anything
            await self._gone(delivery)
            await self.deliveries.record(delivery, attempt, "disabled")
            return
        if replay:  # one extra attempt: the schedule, if any, carries on as it was
            await self.deliveries.record(delivery, attempt, None)
            return
        delivery.tries += 1
        schedule = self.config.schedule_s
        if delivery.tries >= len(schedule):
            log.warning(
                "webhook %s for job %s dead-lettered after %d attempts",
                delivery.id,
                delivery.job_id,
                delivery.tries,
            )
            await self.deliveries.record(delivery, attempt, "dead")
            return
        delay_s = max(schedule[delivery.tries], retry_after or 0.0)
        arq_id = f"send:{delivery.id}:{delivery.tries}"
        next_send = task_delivery(WEBHOOK_SEND, arq_id, (delivery.id,), WEBHOOK_LANE, delay_s)
        await self.deliveries.record(delivery, attempt, "pending", next_send, time.time() + delay_s)

    async def _payload(self, delivery: WebhookDelivery) -> tuple[bytes | None, bool]:
        """The body to send (``None`` once the record has expired), and whether the job's own webhook
        URL answered 410."""
        if delivery.event_type in BATCH_EVENTS:
            batch = await self.batches.get(delivery.job_id)
            if batch is None:
                return None, False
            at = iso(int(delivery.event_id.partition("-")[0]) / 1000)
            told = {"type": delivery.event_type, "id": delivery.id, "timestamp": at, "data": batch.view()}
            return orjson.dumps(told), False
        job, gone = await self._job(delivery.job_id)
        if job is None:
            return None, gone
        event = Event.of_status(delivery.event_id, delivery.event_type)
        return await event_payload(job, event, delivery.id, self.blobs, self.url_ttl_s), gone

    async def _job(self, job_id: str) -> tuple[Job | None, bool]:
        """The record, and whether the job's own webhook URL answered 410: one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(Keys.job(job_id))
            pipe.exists(Keys.webhook_gone(job_id))
            raw, gone = await pipe.execute()
        return (decode_job(raw) if raw else None), bool(gone)

    async def give_up(self, delivery_id: str) -> None:
        """A send task that kept failing (not the receiver: our side) dead-letters its delivery."""
        delivery = await self.deliveries.head(delivery_id)
        if delivery is not None and delivery.state == "pending":
            attempt = {"at": time.time(), "status_code": None, "latency_ms": 0, "error": GAVE_UP}
            await self.deliveries.record(delivery, attempt, "dead")

    async def _destination(self, delivery: WebhookDelivery, gone: bool) -> tuple[SecretRing | None, str]:
        """The secrets to sign with, or ``None`` and why nothing may be sent."""
        if delivery.endpoint_id is None:
            if gone:
                return None, "the job's webhook URL answered 410 Gone earlier"
            ring = await self.endpoints.job_ring(delivery.tenant)
            return ring, "the tenant has no job-webhook signing secret"
        endpoint = await self.endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            return None, "the endpoint was deleted"
        if endpoint.disabled_at is not None:
            return None, f"the endpoint is disabled: {endpoint.disabled_reason}"
        return endpoint.ring, ""

    async def _gone(self, delivery: WebhookDelivery) -> None:
        reason = f"answered 410 Gone at {iso(time.time())}"
        if delivery.endpoint_id is not None:
            await self.endpoints.disable(delivery.endpoint_id, reason)
            log.warning("webhook endpoint %s disabled: it %s", delivery.endpoint_id, reason)
        else:
            await self.redis.set(Keys.webhook_gone(delivery.job_id), reason, ex=self.deliveries.ttl_s)


async def webhook_fanout(ctx: dict[str, Any], job_id: str, event_id: str, event_type: str) -> None:
    """arq task: an event's deliveries (enqueued by the event's own script)."""
    dispatcher: Dispatcher = ctx["dispatcher"]
    if ctx.get("job_try", 1) > MAX_TASK_TRIES:
        log.error("job %s: fanning out event %s failed %d times; dropped", job_id, event_id, MAX_TASK_TRIES)
        return
    await dispatcher.fan_out(job_id, event_id, event_type)


async def webhook_send(ctx: dict[str, Any], delivery_id: str, mode: str = "") -> None:
    """arq task: one attempt at a delivery."""
    dispatcher: Dispatcher = ctx["dispatcher"]
    if ctx.get("job_try", 1) > MAX_TASK_TRIES:
        await dispatcher.give_up(delivery_id)
        return
    await dispatcher.send(delivery_id, mode)
