"""Job records in Redis: creation, compare-and-set transitions, reads and pages.

Key names live in :mod:`aijobs.keys`.

Creation and every status change are single Lua scripts: atomic, and one round trip each. A
transition only happens from the statuses :data:`aijobs.jobs.ALLOWED_FROM` allows (compare-and-set).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from aijobs.events import EMIT_LUA
from aijobs.jobs import ALLOWED_FROM, TERMINAL, Job, JobIds, JobStatus, new_job_id
from aijobs.keys import Keys
from aijobs.queue import Delivery
from aijobs.scriptbatch import ScriptBatcher

if TYPE_CHECKING:  # the ledger builds its entries with these key names
    from aijobs.ledger import Entry

IDEMPOTENCY_TTL_S = 24 * 3600
INDEX_MARGIN_S = 2 * 24 * 3600
_JSON_FIELDS = ("input", "metadata", "output", "error", "attempts", "usage", "route", "task", "webhook")
_FLOAT_FIELDS = ("created_at", "started_at", "finished_at", "deadline_at")
#: What a list item shows: everything but the input and output, which can each be megabytes.
_SUMMARY_FIELDS = ["id", "tenant", "type", "feature", "lane", "status", "runs", *_FLOAT_FIELDS]
_SUMMARY_FIELDS += ["metadata", "error", "usage", "route", "task", "webhook"]
_SUMMARY_KEYS = [name.encode() for name in _SUMMARY_FIELDS]


# Every script that changes a record also appends the job's event (aijobs.events): same atomic step.
# KEYS: job, tenant index, pending, idempotency ('' when none), arq job key, arq queue ('' when none)
# ARGV: id, created_ms, idem value, idem ttl, index cutoff id, arq payload, arq score, arq expiry ms,
#       events ttl, field/value pairs…
_CREATE = (
    EMIT_LUA
    + """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return existing end
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
emit(KEYS[1], 'job.queued', 'queued', false, ARGV[9])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[5])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if KEYS[6] ~= '' and redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[8], 'NX') then
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[1])
end
return false
"""
)

# The ledger entry (aijobs.ledger.Entry): KEYS[k..k+3] are its keys, ARGV[b..] its args.
_LEDGER_LUA = """
local function ledger(k, b)
  redis.call('XADD', KEYS[k], '*', 'r', ARGV[b])
  redis.call('EXPIRE', KEYS[k], ARGV[b + 1])
  local day_cell, total_cell = ARGV[b + 7], ARGV[b + 8]
  local whole_end = b + 8 + 2 * tonumber(ARGV[b + 6])
  for i = b + 9, whole_end, 2 do
    redis.call('HINCRBY', KEYS[k + 1], day_cell .. ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[k + 2], total_cell .. ARGV[i], ARGV[i + 1])
  end
  for i = whole_end + 1, #ARGV, 2 do
    redis.call('HINCRBYFLOAT', KEYS[k + 1], day_cell .. ARGV[i], ARGV[i + 1])
    redis.call('HINCRBYFLOAT', KEYS[k + 2], total_cell .. ARGV[i], ARGV[i + 1])
  end
  redis.call('EXPIRE', KEYS[k + 1], ARGV[b + 2])
  if ARGV[b + 4] ~= '0.0' then
    redis.call('HINCRBYFLOAT', KEYS[k + 3], ARGV[b + 3], ARGV[b + 4])
    redis.call('EXPIRE', KEYS[k + 3], ARGV[b + 5])
  end
end
"""

# KEYS: job [, ledger records, day usage, total usage, spend]
# ARGV: to, allowed-from (",a,b,"), ttl_s (0 = keep), return record (0/1), events ttl, n, n pair items…,
#       [record, records ttl, usage ttl, feature, cost, spend ttl, m, m whole field/increment pairs,
#        fractional field/increment pairs…]
# The lane's pending set is named from the record (non-cluster Redis, as arq itself requires).
_TRANSITION = (
    EMIT_LUA
    + _LEDGER_LUA
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, false} end
if not string.find(ARGV[2], ',' .. current .. ',', 1, true) then return {0, current} end
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 7, 6 + n))
-- A canceled job re-recorded (with what its run spent) is not a second event.
if current ~= ARGV[1] then emit(KEYS[1], 'job.' .. ARGV[1], ARGV[1], false, ARGV[5]) end
-- 'ledgered' makes the entry exactly-once, however many times a terminal write is attempted.
if KEYS[2] and redis.call('HSETNX', KEYS[1], 'ledgered', '1') == 1 then ledger(2, 7 + n) end
if ARGV[1] == 'running' then redis.call('HINCRBY', KEYS[1], 'runs', 1) end
if current == 'queued' then
  local lane, id = unpack(redis.call('HMGET', KEYS[1], 'lane', 'id'))
  redis.call('ZREM', '{PENDING}' .. lane, id)
end
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if ARGV[4] == '1' then return {1, current, redis.call('HGETALL', KEYS[1])} end
return {1, current}
""".replace("{PENDING}", Keys.pending(""))
)


# KEYS: job [, arq job key, arq queue]
# ARGV: expected status, event type ('' = none), progress ('' = none), events ttl, n, n pair items…
#       [, arq job id, arq payload, arq score, arq expiry ms]
_UPDATE = (
    EMIT_LUA
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if current ~= ARGV[1] then return {0, current or false} end
local n = tonumber(ARGV[5])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n)) end
if ARGV[2] ~= '' then emit(KEYS[1], ARGV[2], current, ARGV[3] ~= '' and ARGV[3], ARGV[4]) end
if KEYS[2] then
  local a = 6 + n
  redis.call('SET', KEYS[2], ARGV[a + 1], 'PX', ARGV[a + 3])
  redis.call('ZADD', KEYS[3], ARGV[a + 2], ARGV[a])
end
return {1, current}
"""
)


# A job that ran in its caller's request (aijobs.calls), written once it has finished.
# KEYS: job, tenant index, ledger records, day usage, total usage, spend
# ARGV: id, index cutoff id, ttl_s, status, n, n pair items…, ledger args…
_RECORD = (
    EMIT_LUA
    + _LEDGER_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end  -- written already: once, ledger included
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'ledgered', '1', unpack(ARGV, 6, 5 + n))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
emit(KEYS[1], 'job.' .. ARGV[4], ARGV[4], false, ARGV[3])
ledger(3, 6 + n)
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Created:
    """The outcome of :meth:`JobStore.create`: the job, and whether this call made it."""

    job: Job
    created: bool


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body; ``job_id`` is that first job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of a compare-and-set: ``ok``, the status found, and the record when asked for."""

    ok: bool
    previous: JobStatus | None
    job: Job | None = None


def _encode(job: Job) -> list[Any]:
    pairs: list[Any] = []
    for name in ("id", "tenant", "type", "feature", "lane", "status"):
        pairs += [name, str(getattr(job, name))]
    pairs += ["created_at", repr(job.created_at), "runs", job.runs]
    for name in _JSON_FIELDS:
        value = getattr(job, name)
        if value is not None:
            pairs += [name, orjson.dumps(value)]
    return pairs


def decode_job(raw: dict[bytes, bytes] | list[bytes]) -> Job:
    """A record from HGETALL (a dict, or the flat list a Lua script returns)."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    fields = {k.decode(): v for k, v in raw.items()}
    job = Job(
        id=fields["id"].decode(),
        tenant=fields["tenant"].decode(),
        type=fields["type"].decode(),
        feature=fields["feature"].decode(),
        lane=fields["lane"].decode(),
        status=JobStatus(fields["status"].decode()),
        created_at=float(fields["created_at"]),
        input={},
        runs=int(fields.get("runs", b"0")),
        requeues=int(fields.get("requeues", b"0")),
    )
    for name in _FLOAT_FIELDS[1:]:
        if name in fields:
            setattr(job, name, float(fields[name]))
    for name in _JSON_FIELDS:
        if name in fields:
            setattr(job, name, orjson.loads(fields[name]))
    return job


class JobStore:
    """Job records over one ``redis.asyncio.Redis`` (bytes responses)."""

    def __init__(
        self, redis: Redis, job_ttl_s: int, records_ttl_s: int = 3 * 86400, usage_ttl_s: int = 35 * 86400
    ) -> None:
        self.redis = redis
        self.job_ttl_s = job_ttl_s
        self.records_ttl_s = records_ttl_s
        self.usage_ttl_s = usage_ttl_s
        #: A live job's event stream outlives the longest wait-then-run a record can have.
        self.live_ttl_s = job_ttl_s + INDEX_MARGIN_S
        self._create = ScriptBatcher(redis, redis.register_script(_CREATE))
        self._transition = ScriptBatcher(redis, redis.register_script(_TRANSITION))
        self._update = ScriptBatcher(redis, redis.register_script(_UPDATE))
        self._record = ScriptBatcher(redis, redis.register_script(_RECORD))
        self._ids = JobIds()

    async def create(
        self,
        *,
        tenant: str,
        type: str,
        feature: str,
        lane: str,
        input: dict[str, Any],
        metadata: dict[str, str],
        idempotency: tuple[str, str] | None = None,
        deliver: Callable[[str, str], Delivery] | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> Created:
        """Write a new queued record, or return the job an Idempotency-Key already made.

        ``idempotency`` is ``(key_hash, body_hash)``; a stored key with another body raises
        :class:`IdempotencyConflict`. ``deliver(job_id, lane)`` (normally :func:`aijobs.queue.delivery`)
        enqueues the new job in the same atomic step.
        """
        now = time.time()
        job_id = self._ids.new(int(now * 1000))
        job = Job(
            job_id, tenant, type, feature, lane, JobStatus.QUEUED, now, input, metadata, webhook=webhook
        )
        idem_key = Keys.idempotency(tenant, idempotency[0]) if idempotency else ""
        idem_value = f"{idempotency[1]} {job.id}" if idempotency else ""
        # Index entries older than any record can live (kept job_ttl_s after finishing, and a job may
        # wait or run up to two days first) are trimmed here; younger stale ones go as `page` meets them.
        cutoff = new_job_id(int((now - self.job_ttl_s - INDEX_MARGIN_S) * 1000))[:-16]
        queued = deliver(job.id, lane) if deliver else None
        keys = [Keys.job(job.id), Keys.tenant_jobs(tenant), Keys.pending(lane), idem_key]
        keys += [queued.job_key, queued.queue_key] if queued else ["", ""]
        args: list[Any] = [job.id, int(now * 1000), idem_value, IDEMPOTENCY_TTL_S, cutoff]
        args += [queued.payload, queued.score_ms, queued.expires_ms] if queued else ["", 0, 0]
        args += [self.live_ttl_s, *_encode(job)]
        existing = await self._create(keys, args)
        if existing is None:
            return Created(job, created=True)
        body_hash, _, first_id = existing.decode().partition(" ")
        if idempotency is None or body_hash != idempotency[1]:
            raise IdempotencyConflict(first_id)
        found = await self.get(first_id)
        if found is None:  # the first job expired while its key lived on: make a fresh one
            await self.redis.delete(idem_key)
            return await self.create(
                tenant=tenant, type=type, feature=feature, lane=lane, input=input, metadata=metadata,
                idempotency=idempotency, deliver=deliver, webhook=webhook,
            )  # fmt: skip
        return Created(found, created=False)

    def new_id(self, now_s: float) -> str:
        """A fresh job id for a job created at ``now_s``."""
        return self._ids.new(int(now_s * 1000))

    async def record(self, job: Job, ledger: Entry) -> None:
        """Write ``job``, finished in its caller's request, with its terminal event and ledger entry.

        One script: the record never exists without its ledger entry, and it is listed, followed
        and delivered to webhooks like any job. A job already written is left as it is, so
        writing it again (a retried batch tick) never counts it twice.
        """
        assert job.status in TERMINAL
        assert job.finished_at is not None
        pairs = _encode(job)
        for name in _FLOAT_FIELDS[1:3]:
            pairs += [name, repr(getattr(job, name))]
        cutoff = new_job_id(int((job.created_at - self.job_ttl_s - INDEX_MARGIN_S) * 1000))[:-16]
        keys = [Keys.job(job.id), Keys.tenant_jobs(job.tenant), *ledger.keys()]
        args: list[Any] = [job.id, cutoff, self.job_ttl_s, job.status.value, len(pairs), *pairs]
        args += ledger.args(self.records_ttl_s, self.usage_ttl_s)
        await self._record(keys, args)

    async def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        """The record, or ``None`` when missing or (with ``tenant``) owned by someone else."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.job(job_id))  # type: ignore[misc]
        if not raw:
            return None
        job = decode_job(raw)
        return job if tenant is None or job.tenant == tenant else None

    async def status(self, job_id: str) -> JobStatus | None:
        """Just the status (one small read), or ``None`` when the record is gone."""
        raw = await self.redis.hget(Keys.job(job_id), "status")  # type: ignore[misc]
        return JobStatus(raw.decode()) if raw else None

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        allowed_from: Iterable[JobStatus] | None = None,
        fields: dict[str, Any] | None = None,
        want_record: bool = False,
        ledger: Entry | None = None,
        now: float | None = None,
    ) -> Transition:
        """Move ``job_id`` to ``to`` if its status is one it may come from; set ``fields`` with it.

        A ``ledger`` entry is written in the same atomic step, only when the change happens.
        """
        sources = frozenset(allowed_from) if allowed_from is not None else ALLOWED_FROM[to]
        now = now or time.time()
        pairs: list[Any] = []
        if to is not JobStatus.QUEUED:
            pairs += ["started_at" if to is JobStatus.RUNNING else "finished_at", repr(now)]
        for name, value in (fields or {}).items():
            pairs += [name, orjson.dumps(value) if name in _JSON_FIELDS else value]
        ttl_s = self.job_ttl_s if to in TERMINAL else 0
        allowed = "," + ",".join(sorted(sources)) + ","
        keys = [Keys.job(job_id)]
        args = [to.value, allowed, ttl_s, int(want_record), ttl_s or self.live_ttl_s, len(pairs), *pairs]
        if ledger is not None:
            keys += ledger.keys()
            args += ledger.args(self.records_ttl_s, self.usage_ttl_s)
        reply = await self._transition(keys, args)
        previous = JobStatus(reply[1].decode()) if reply[1] else None
        job = decode_job(reply[2]) if len(reply) > 2 else None
        return Transition(bool(reply[0]), previous, job)

    async def update(
        self,
        job_id: str,
        expect: JobStatus,
        fields: dict[str, Any],
        deliver: Delivery | None = None,
        progress: float | None = None,
    ) -> Transition:
        """Set ``fields`` if the job is still ``expect``; with ``deliver``, enqueue that arq job atomically.

        This is how a media task's id reaches the record together with its first poll: a task is
        never polled before it is on the record, and never on the record without a poll scheduled.
        With ``progress`` (0 to 1), a ``job.progress`` event is appended in the same step.
        """
        pairs: list[Any] = []
        for name, value in fields.items():
            pairs += [name, orjson.dumps(value) if name in _JSON_FIELDS else value]
        keys = [Keys.job(job_id)]
        event = ("job.progress", repr(progress)) if progress is not None else ("", "")
        args: list[Any] = [expect.value, *event, self.live_ttl_s, len(pairs), *pairs]
        if deliver is not None:
            keys += [deliver.job_key, deliver.queue_key]
            args += [deliver.arq_id, deliver.payload, deliver.score_ms]
            args.append(deliver.expires_ms)
        reply = await self._update(keys, args)
        previous = JobStatus(reply[1].decode()) if reply[1] else None
        return Transition(bool(reply[0]), previous)

    async def page(
        self,
        tenant: str,
        *,
        limit: int,
        after: str | None = None,
        filters: dict[str, str] | None = None,
        scan_limit: int = 5_000,
        summaries: bool = False,
    ) -> tuple[list[Job], str | None]:
        """Newest first. Returns the page and the cursor for the next one (``None`` at the end).

        Filtering scans ids; after ``scan_limit`` of them the page may come back short, with a
        cursor to continue from, so one request never walks a tenant's whole history. With
        ``summaries`` the records come without input and output, which are not even read.
        """
        index = Keys.tenant_jobs(tenant)
        wanted = {k: v.encode() for k, v in (filters or {}).items()}
        names = list(wanted)
        page: list[str] = []
        cursor = f"({after}" if after else "+"
        batch_size = max(limit * 2, 50)
        scanned = 0
        while True:
            batch = [b.decode() for b in await self.redis.zrevrangebylex(index, cursor, "-", 0, batch_size)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.hmget(Keys.job(job_id), ["id", *names])
                rows = await pipe.execute()
            gone = [job_id for job_id, row in zip(batch, rows, strict=True) if row[0] is None]
            if gone:  # records expire on their own; their index entries are dropped as we meet them
                await self.redis.zrem(index, *gone)
            for job_id, row in zip(batch, rows, strict=True):
                if row[0] is not None and all(v == wanted[n] for n, v in zip(names, row[1:], strict=True)):
                    page.append(job_id)
                    if len(page) == limit:
                        return await self._records(page, summaries), job_id
            scanned += len(batch)
            if len(batch) < batch_size:
                return await self._records(page, summaries), None
            cursor = f"({batch[-1]}"
            if scanned >= scan_limit:
                return await self._records(page, summaries), batch[-1]

    async def get_many(self, ids: list[str]) -> list[Job]:
        """The records of ``ids`` that exist, in order, in one round trip."""
        return await self._records(ids)

    async def statuses(self, ids: list[str]) -> list[JobStatus | None]:
        """Each job's status (``None`` when its record is gone), in one round trip."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(Keys.job(job_id), "status")
            found = await pipe.execute()
        return [JobStatus(status.decode()) if status else None for status in found]

    async def _records(self, ids: list[str], summaries: bool = False) -> list[Job]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                if summaries:
                    pipe.hmget(Keys.job(job_id), _SUMMARY_FIELDS)
                else:
                    pipe.hgetall(Keys.job(job_id))
            raws = await pipe.execute()
        if summaries:
            raws = [{k: v for k, v in zip(_SUMMARY_KEYS, row, strict=True) if v is not None} for row in raws]
        return [decode_job(raw) for raw in raws if raw]

    async def pending(self, lane: str, older_than_s: float, limit: int = 1000) -> list[str]:
        """Ids of ``lane``'s queued jobs created more than ``older_than_s`` ago, oldest first."""
        cutoff_ms = int((time.time() - older_than_s) * 1000)
        key = Keys.pending(lane)
        ids = [i.decode() for i in await self.redis.zrangebyscore(key, "-inf", cutoff_ms, 0, limit)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(Keys.job(job_id))
            exists = await pipe.execute()
        gone = [job_id for job_id, found in zip(ids, exists, strict=True) if not found]
        if gone:  # deleted by hand: nothing left to run
            await self.redis.zrem(key, *gone)
        return [job_id for job_id, found in zip(ids, exists, strict=True) if found]
