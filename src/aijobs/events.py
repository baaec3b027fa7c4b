"""Job events: each status change (and a media job's progress) as an entry in the job's own stream.

A batch's status changes use the same script (:data:`EMIT_LUA`) on the batch's record, so a batch's
endings reach webhook endpoints the same way (:data:`BATCH_EVENTS`).

The entry is written by the same Lua script that changes the record (see :mod:`aijobs.store`), so an
event is never lost and never told before it happened. The script also announces the entry on a
pub/sub channel of the same name (a wake-up for live readers: :class:`aijobs.live.Hub`) and, for the
events webhooks carry, enqueues the fan-out task on the ``webhooks`` lane when the job has a webhook
or its tenant has endpoints. Entry ids are Redis stream ids (``<ms>-<seq>``): ordered, and what
``Last-Event-ID`` resumes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

from redis.asyncio import Redis

from aijobs.jobs import JobStatus
from aijobs.keys import Keys
from aijobs.queue import PAYLOAD_TTL_MS, WEBHOOK_FANOUT, WEBHOOK_LANE, queue_name
from aijobs.types import BatchEvent

#: Every event type, in the order a job can meet them.
EVENT_TYPES = ("job.queued", "job.running", "job.progress", "job.succeeded", "job.failed", "job.canceled")
#: The events webhooks deliver.
WEBHOOK_EVENTS = ("job.running", "job.succeeded", "job.failed", "job.canceled")
TERMINAL_EVENTS = frozenset({"job.succeeded", "job.failed", "job.canceled"})
#: A batch's events that webhooks deliver: its endings (see :mod:`aijobs.batches`).
BATCH_EVENTS: tuple[str, ...] = get_args(BatchEvent)
#: A stream keeps at most about this many entries (media progress is the only long tail).
MAX_EVENTS = 256


# ASCII digits, 19 at most: always below 2**64, which Redis requires of both parts.
_EVENT_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")


# emit(job key, event type, status, progress or false, stream ttl s) → the entry id.
# A script defines this function and calls it after its own change (see aijobs.store).
EMIT_LUA = (
    """
local function emit(job_key, etype, status, progress, ttl_s)
  local id, tenant, hook = unpack(redis.call('HMGET', job_key, 'id', 'tenant', 'webhook'))
  local stream = '{EVENTS}' .. id
  local ev
  if progress then
    ev = redis.call('XADD', stream, 'MAXLEN', '~', {MAX}, '*', 'type', etype, 'status', status,
                    'progress', progress)
  else
    ev = redis.call('XADD', stream, 'MAXLEN', '~', {MAX}, '*', 'type', etype, 'status', status)
  end
  redis.call('EXPIRE', stream, ttl_s)
  redis.call('PUBLISH', stream, ev .. ' ' .. etype)
  -- The job's own webhook is filtered here (its events are in its JSON); endpoints in the fan-out.
  local wanted = hook and string.find(hook, '"' .. etype .. '"', 1, true)
  if {HOOKED}[etype] and (wanted or redis.call('EXISTS', '{ENDPOINTS}' .. tenant) == 1) then
    local arq_id = 'hook:' .. id .. ':' .. ev
    local t = redis.call('TIME')
    local now_ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
    local payload = '{"t":null,"f":"{FANOUT}","a":["' .. id .. '","' .. ev .. '","' .. etype
      .. '"],"k":{},"et":' .. now_ms .. '}'
    if redis.call('SET', 'arq:job:' .. arq_id, payload, 'PX', {PAYLOAD_TTL}, 'NX') then
      redis.call('ZADD', '{QUEUE}', now_ms, arq_id)
    end
  end
  return ev
end
""".replace("{EVENTS}", Keys.events(""))
    .replace("{ENDPOINTS}", Keys.tenant_endpoints(""))
    .replace("{MAX}", str(MAX_EVENTS))
    .replace("{HOOKED}", "({" + ", ".join(f"['{e}'] = true" for e in WEBHOOK_EVENTS + BATCH_EVENTS) + "})")
    .replace("{FANOUT}", WEBHOOK_FANOUT)
    .replace("{PAYLOAD_TTL}", str(PAYLOAD_TTL_MS))
    .replace("{QUEUE}", queue_name(WEBHOOK_LANE))
)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's stream. ``at`` is epoch seconds (from the entry id)."""

    id: str
    type: str
    status: JobStatus
    progress: float | None = None

    @property
    def at(self) -> float:
        return int(self.id.partition("-")[0]) / 1000

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @classmethod
    def of_status(cls, event_id: str, event_type: str) -> Event:
        """A status event from its id and type alone (a webhook's event outlives stream trimming)."""
        return cls(event_id, event_type, JobStatus(event_type.removeprefix("job.")))


def is_event_id(text: str) -> bool:
    """True for a stream entry id (``<ms>-<seq>``): what ``Last-Event-ID`` must look like."""
    return _EVENT_ID.fullmatch(text) is not None


def decode_event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    """An entry as XRANGE returns it."""
    progress = fields.get(b"progress")
    return Event(
        entry_id.decode(),
        fields[b"type"].decode(),
        JobStatus(fields[b"status"].decode()),
        float(progress) if progress is not None else None,
    )


class JobEvents:
    """Reads job event streams."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def after(self, job_id: str, last_id: str | None = None, count: int = 500) -> list[Event]:
        """The events after ``last_id`` (all of them when ``None``), oldest first."""
        start = f"({last_id}" if last_id else "-"
        raw: list[Any] = await self.redis.xrange(Keys.events(job_id), start, "+", count=count)
        return [decode_event(entry_id, fields) for entry_id, fields in raw]
