"""Batches: a file of requests run as jobs on the batch lane, with one record for the whole.

A batch moves ``validating → in_progress → finalizing → completed``; it may end ``failed`` (its
input could not be run), ``expired`` (its completion window ran out) or, through ``cancelling``,
``cancelled``. The terminal set is :data:`TERMINAL`; every move is compare-and-set against
:data:`ALLOWED_FROM`, in one script, so two drivers can never both finish a batch.

In Redis (key names in :class:`~aijobs.keys.Keys`):

- the record, a hash: the fields of :class:`Batch`, counters kept by ``HINCRBY``;
- the line map, a hash: line number → the id of the job running it;
- the open set: ids of line jobs not yet counted as finished. :meth:`BatchStore.settle` moves a
  finished one out and counts it in the same script, so a line is counted exactly once however
  often a driver retries;
- the tenant's index, a sorted set by creation time, for listing.

Every move is also an event, ``batch.<status>``, written by the same script as a job's are
(:data:`aijobs.events.EMIT_LUA`): the endings (``batch.completed``, ``batch.failed``,
``batch.expired``, ``batch.cancelled``) go to the tenant's webhook endpoints that subscribe to them,
and every move and every counted line wakes whoever follows the batch live.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from redis.asyncio import Redis

from aijobs.events import EMIT_LUA
from aijobs.jobs import TERMINAL as JOB_TERMINAL
from aijobs.jobs import JobStatus
from aijobs.keys import Keys
from aijobs.scriptbatch import ScriptBatcher


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
_RUNNING = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
#: to-status → the statuses it may come from.
ALLOWED_FROM: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.IN_PROGRESS: frozenset({BatchStatus.VALIDATING}),
    BatchStatus.FINALIZING: _RUNNING | {BatchStatus.CANCELLING},
    BatchStatus.COMPLETED: frozenset({BatchStatus.FINALIZING}),
    BatchStatus.FAILED: _RUNNING | {BatchStatus.FINALIZING},
    BatchStatus.EXPIRED: frozenset({BatchStatus.FINALIZING}),
    BatchStatus.CANCELLING: _RUNNING,
    BatchStatus.CANCELLED: frozenset({BatchStatus.FINALIZING}),
}
BATCH_ID_PREFIX = "batch_"
#: The endpoint of a native batch (job inputs of any type, see :mod:`aijobs.api.jobbatches`).
NATIVE_ENDPOINT = "/v1/jobs"
#: Counted line outcomes: a succeeded job is ``completed``, any other ending ``failed``.
_COUNTERS = ("completed", "failed")
_JSON_FIELDS = frozenset({"metadata", "errors", "remote"})


def new_batch_id() -> str:
    return BATCH_ID_PREFIX + os.urandom(12).hex()


def is_batch_id(text: str) -> bool:
    return len(text) == 30 and text.startswith(BATCH_ID_PREFIX) and all(c in _HEX for c in text[6:])


_HEX = frozenset("0123456789abcdef")
#: What a batch's view shows of its provider batch (never its file ids: they are the provider's).
_REMOTE_VIEW = ("provider", "model", "status", "total", "completed", "failed")
#: The job type of an OpenAI batch's lines, for records from before batches kept it.
_ENDPOINT_TYPES = {"/v1/embeddings": "embed", "/v1/rerank": "rerank"}


@dataclass(slots=True)
class Batch:
    """One batch's record (see the module docstring)."""

    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    feature: str
    created_at: float
    expires_at: float
    status: BatchStatus = BatchStatus.VALIDATING
    #: The job type every line runs as.
    type: str = "chat"
    metadata: dict[str, str] = field(default_factory=dict)
    total: int = 0
    #: Lines read from the input so far, and where in it (bytes) the next one starts.
    expanded: int = 0
    offset: int = 0
    completed: int = 0
    failed: int = 0
    #: Where a ``finalizing`` batch is heading: completed, expired or cancelled.
    ending: str = ""
    output_file_id: str = ""
    error_file_id: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    in_progress_at: float = 0.0
    finalizing_at: float = 0.0
    ended_at: float = 0.0
    cancelling_at: float = 0.0
    #: Driver ticks that raised since the last good one (the batch fails after too many).
    tick_failures: int = 0
    #: The sequence number of the tick allowed to schedule the next (see :meth:`BatchStore.next_tick`).
    tick_seq: int = 0
    #: The batch handed to a provider's own batch API, while and after it is (see :mod:`aijobs.handoff`).
    remote: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """OpenAI's batch object."""
        ended = {status: int(self.ended_at) if self.status is status else None for status in TERMINAL}
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "status": self.status.value,
            "output_file_id": self.output_file_id or None, "error_file_id": self.error_file_id or None,
            "created_at": int(self.created_at), "expires_at": int(self.expires_at),
            "in_progress_at": int(self.in_progress_at) or None,
            "finalizing_at": int(self.finalizing_at) or None,
            "completed_at": ended[BatchStatus.COMPLETED], "failed_at": ended[BatchStatus.FAILED],
            "expired_at": ended[BatchStatus.EXPIRED], "cancelling_at": int(self.cancelling_at) or None,
            "cancelled_at": ended[BatchStatus.CANCELLED],
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "metadata": self.metadata or None, "feature": self.feature, "type": self.type,
            "provider_batch": {name: self.remote.get(name) for name in _REMOTE_VIEW} if self.remote else None,
        }  # fmt: skip


def _encode(batch: Batch) -> list[Any]:
    pairs: list[Any] = []
    for name, value in asdict(batch).items():
        pairs += [name, orjson.dumps(value) if name in _JSON_FIELDS else value]
    return pairs


def _decode(raw: dict[bytes, bytes]) -> Batch:
    fields: dict[str, Any] = {key.decode(): value.decode() for key, value in raw.items()}
    for name in _JSON_FIELDS & fields.keys():
        fields[name] = orjson.loads(fields[name])
    for name, kind in Batch.__annotations__.items():
        if name in fields and kind in ("int", "float"):
            fields[name] = int(fields[name]) if kind == "int" else float(fields[name])
    fields["status"] = BatchStatus(fields["status"])
    fields.setdefault("type", _ENDPOINT_TYPES.get(fields["endpoint"], "chat"))
    fields.setdefault("remote", {})
    return Batch(**fields)


# KEYS: batch, tenant index. ARGV: id, created ms, pair items…
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
"""

# KEYS: batch. ARGV: to, allowed-from (",a,b,"), pair items to set…
# A move is an event (batch.<status>) in the batch's stream; endings go on to webhooks.
_MOVE = (
    EMIT_LUA
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
if not string.find(ARGV[2], ',' .. current .. ',', 1, true) then return current end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
emit(KEYS[1], 'batch.' .. ARGV[1], ARGV[1], false, math.max(redis.call('TTL', KEYS[1]), 60))
return 1
"""
)

# KEYS: batch, open set, events channel. ARGV: pairs of (job id, counter) for finished line jobs.
# Returns how many were counted now (a retried call counts none twice); progress wakes live readers.
_SETTLE = """
local counted = 0
for i = 1, #ARGV, 2 do
  if redis.call('SREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    counted = counted + 1
  end
end
if counted > 0 then redis.call('PUBLISH', KEYS[3], 'batch.progress') end
return counted
"""


# KEYS: batch, line map, open set. ARGV: expected expanded, new offset, new expanded, ttl,
# pairs of (line number, job id)…
_ADVANCE = """
if tonumber(redis.call('HGET', KEYS[1], 'expanded') or '-1') ~= tonumber(ARGV[1]) then return 0 end
for i = 5, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('SADD', KEYS[3], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'offset', ARGV[2], 'expanded', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: batch, line map, events channel. ARGV: ttl, triples of (line number, job id, counter)…
# Maps each line not yet mapped and counts it (its outcome is known already); returns the job each
# line is mapped to. A line mapped before keeps its job and is not counted again.
_CLAIM = """
local winners = {}
local counted = 0
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 2], 1)
    counted = counted + 1
    winners[#winners + 1] = ARGV[i + 1]
  else
    winners[#winners + 1] = redis.call('HGET', KEYS[2], ARGV[i])
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
if counted > 0 then redis.call('PUBLISH', KEYS[3], 'batch.progress') end
return winners
"""

# KEYS: batch. ARGV: the revision read, the new remote (JSON, with the next revision).
_SET_REMOTE = """
local current = redis.call('HGET', KEYS[1], 'remote')
local rev = 0
if current and current ~= '{}' then rev = cjson.decode(current)['rev'] or 0 end
if rev ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'remote', ARGV[2])
return 1
"""

# KEYS: batch. ARGV: the tick's sequence number.
_NEXT_TICK = """
if redis.call('HGET', KEYS[1], 'tick_seq') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'tick_seq', tonumber(ARGV[1]) + 1, 'tick_failures', 0)
return 1
"""


class BatchStore:
    """Batch records, line maps and open sets in Redis (see the module docstring)."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._move = ScriptBatcher(redis, redis.register_script(_MOVE))
        self._settle = ScriptBatcher(redis, redis.register_script(_SETTLE))
        self._advance = ScriptBatcher(redis, redis.register_script(_ADVANCE))
        self._next_tick = ScriptBatcher(redis, redis.register_script(_NEXT_TICK))
        self._claim = redis.register_script(_CLAIM)
        self._set_remote = ScriptBatcher(redis, redis.register_script(_SET_REMOTE))

    async def create(self, batch: Batch) -> None:
        keys = [Keys.batch(batch.id), Keys.tenant_batches(batch.tenant)]
        await self._create(keys=keys, args=[batch.id, int(batch.created_at * 1000), *_encode(batch)])
        await self.redis.expire(Keys.batch(batch.id), self.kept_s(batch))

    def kept_s(self, batch: Batch) -> int:
        """How long a batch's keys live: its whole window, then as long as a job's record."""
        return int(batch.expires_at - batch.created_at) + self.ttl_s

    async def get(self, batch_id: str, tenant: str | None = None) -> Batch | None:
        """The record, or ``None`` when missing or (with ``tenant``) someone else's."""
        if not is_batch_id(batch_id):
            return None
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.batch(batch_id))  # type: ignore[misc]
        if not raw:
            return None
        batch = _decode(raw)
        return batch if tenant is None or batch.tenant == tenant else None

    async def page(self, tenant: str, limit: int, after: str | None = None) -> tuple[list[Batch], bool]:
        """The tenant's batches, newest first, after the one named ``after``; and whether more follow."""
        index = Keys.tenant_batches(tenant)
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(index, after)
            if rank is None:
                return [], False
            start = rank + 1
        ids = [i.decode() for i in await self.redis.zrevrange(index, start, start + limit)]
        found = [batch for batch in [await self.get(i, tenant) for i in ids[:limit]] if batch is not None]
        return found, len(ids) > limit

    async def move(self, batch_id: str, to: BatchStatus, **fields: Any) -> BatchStatus | None:
        """Set ``to`` (and ``fields``) if the status allows it. Returns ``None`` when it moved, else the
        status that refused it (:class:`LookupError` when there is no such batch)."""
        allowed = "," + ",".join(status.value for status in ALLOWED_FROM[to]) + ","
        pairs = [item for name, value in fields.items() for item in (name, value)]
        result = await self._move([Keys.batch(batch_id)], [to.value, allowed, *pairs])
        if result is None:
            raise LookupError(batch_id)
        return None if result == 1 else BatchStatus(result.decode())

    async def count_failure(self, batch_id: str) -> int:
        """One more tick that broke; how many have, in a row or not."""
        failures: int = await self.redis.hincrby(Keys.batch(batch_id), "tick_failures", 1)  # type: ignore[misc]
        return failures

    async def advance(
        self, batch: Batch, read_from: int, jobs: dict[int, str], offset: int, expanded: int | None = None
    ) -> bool:
        """Map and open the lines a tick started, and move the read position past them (to line
        ``expanded``, byte ``offset``), if the position is still ``read_from`` lines in; ``False``
        (nothing done) when another tick moved it first. A line already mapped is never opened
        again, so it is never counted twice."""
        keys = [Keys.batch(batch.id), Keys.batch_lines(batch.id), Keys.batch_open(batch.id)]
        pairs = [item for number, job in jobs.items() for item in (number, job)]
        expanded = read_from + len(jobs) if expanded is None else expanded
        moved = await self._advance(keys, [read_from, offset, expanded, self.kept_s(batch), *pairs])
        return bool(moved)

    async def next_tick(self, batch_id: str, seq: int) -> bool:
        """Claim the right to schedule tick ``seq + 1``: only one run of tick ``seq`` gets it, so a tick
        delivered twice never starts a second chain. A good tick also clears the failure count."""
        claimed = await self._next_tick([Keys.batch(batch_id)], [seq])
        return bool(claimed)

    async def open_jobs(self, batch_id: str) -> list[str]:
        return [job.decode() for job in await self.redis.smembers(Keys.batch_open(batch_id))]  # type: ignore[misc]

    async def settle(self, batch_id: str, finished: dict[str, JobStatus]) -> int:
        """Count each finished line job once (completed or failed); how many were counted now."""
        assert all(status in JOB_TERMINAL for status in finished.values())
        pairs: list[Any] = []
        for job_id, status in finished.items():
            pairs += [job_id, _COUNTERS[0] if status is JobStatus.SUCCEEDED else _COUNTERS[1]]
        if not pairs:
            return 0
        keys = [Keys.batch(batch_id), Keys.batch_open(batch_id), Keys.events(batch_id)]
        counted: int = await self._settle(keys, pairs)
        return counted

    async def line_jobs(self, batch_id: str, first: int, count: int) -> list[str | None]:
        """The job running each of lines ``first`` to ``first + count - 1`` (``None``: never started)."""
        names = [str(n) for n in range(first, first + count)]
        jobs = await self.redis.hmget(Keys.batch_lines(batch_id), names)  # type: ignore[misc]
        return [job.decode() if job is not None else None for job in jobs]

    async def mapped(self, batch_id: str) -> int:
        """How many lines have a job."""
        count: int = await self.redis.hlen(Keys.batch_lines(batch_id))  # type: ignore[misc]
        return count

    async def claim(self, batch: Batch, jobs: dict[int, tuple[str, JobStatus]]) -> list[str]:
        """Map each line in ``jobs`` to its already finished job and count it, unless the line has a
        job already; the job each line is mapped to, in order (a retried call finds the first's)."""
        args: list[Any] = [self.kept_s(batch)]
        for number, (job, status) in jobs.items():
            args += [number, job, _COUNTERS[0] if status is JobStatus.SUCCEEDED else _COUNTERS[1]]
        keys = [Keys.batch(batch.id), Keys.batch_lines(batch.id), Keys.events(batch.id)]
        winners = await self._claim(keys=keys, args=args)
        return [job.decode() for job in winners]

    async def set_remote(self, batch_id: str, remote: dict[str, Any]) -> bool:
        """Save what the driver knows of the batch's provider batch, if no other tick saved since it
        was read (``remote["rev"]`` counts saves); ``False`` when one did (this tick should stop)."""
        read = int(remote.get("rev", 0))
        saved = {**remote, "rev": read + 1}
        moved = await self._set_remote([Keys.batch(batch_id)], [read, orjson.dumps(saved)])
        if moved:
            remote["rev"] = read + 1
        return bool(moved)
