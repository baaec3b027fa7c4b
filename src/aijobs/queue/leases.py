"""Leases: a claimed job belongs to the worker that keeps renewing it, and to no one else.

A claim takes arq's in-progress lock for ``lease_s`` (not for the whole job timeout), with the
worker's token as its value, and moves the job's queue score to the lease's end (a visibility
timeout). A live worker renews the leases of all its running jobs in one script every
``lease_s / 3``; a dead one stops renewing, so its jobs come due again within ``lease_s`` of its
last renewal, however long their ``job_timeout_s``. A job's own time limit is unchanged.

Who may touch a job's keys is decided in Redis, never by the worker's memory: renew, settle and
release act only on jobs whose lock holds this worker's token (or whose lapsed lock no other worker
has taken since). A worker that stalled past its lease and finds a job taken is told so by
:meth:`Leases.renew`, and stops running it rather than call upstream on another worker's job.

Per lane, ``{queue}:leases`` maps each leased job to its worker's token (so a claim can tell a lease
that lapsed from a job that was handed back) and ``{queue}:lease_counts`` counts renewals, leases
lost, redeliveries after a lapse and jobs handed back, for ``/metrics``.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from arq.utils import timestamp_ms

LEASES_SUFFIX = ":leases"
COUNTS_SUFFIX = ":lease_counts"

# Whether ARGV[1] (a token) owns job `id`: its lock holds the token, or the lock lapsed and no one
# claimed the job since (the leases hash still names us and the job is still queued).
_OWNS = """
local function owns(id, token)
  local holder = redis.call('GET', 'arq:in-progress:' .. id)
  if holder then return holder == token end
  return redis.call('HGET', KEYS[2], id) == token and redis.call('ZSCORE', KEYS[1], id) ~= false
end
"""

# KEYS: queue, leases, counts   ARGV: token, now_ms, lease_ms, max claims
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
local claimed = {}
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[3])
local lapsed = 0
for _, id in ipairs(due) do
  if redis.call('SET', 'arq:in-progress:' .. id, ARGV[1], 'PX', ARGV[3], 'NX') then
    local score = redis.call('ZSCORE', KEYS[1], id)
    redis.call('ZADD', KEYS[1], 'XX', until_ms, id)
    if redis.call('HGET', KEYS[2], id) then lapsed = lapsed + 1 end
    redis.call('HSET', KEYS[2], id, ARGV[1])
    local try = redis.call('INCR', 'arq:retry:' .. id)
    redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
    claimed[#claimed + 1] = try
    claimed[#claimed + 1] = redis.call('GET', 'arq:job:' .. id) or ''
  end
end
if lapsed > 0 then redis.call('HINCRBY', KEYS[3], 'redelivered', lapsed) end
return claimed
"""

# KEYS: queue, leases, counts   ARGV: token, now_ms, lease_ms, ids...   → the ids no longer ours
RENEW = (
    _OWNS
    + """
local lost = {}
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[3])
for i = 4, #ARGV do
  local id = ARGV[i]
  if owns(id, ARGV[1]) then
    redis.call('SET', 'arq:in-progress:' .. id, ARGV[1], 'PX', ARGV[3])
    redis.call('ZADD', KEYS[1], 'XX', until_ms, id)
  else
    lost[#lost + 1] = id
  end
end
local renewed = #ARGV - 3 - #lost
if renewed > 0 then redis.call('HINCRBY', KEYS[3], 'renewed', renewed) end
if #lost > 0 then redis.call('HINCRBY', KEYS[3], 'lost', #lost) end
return lost
"""
)

# KEYS: queue, leases   ARGV: token, ids...   Finished jobs: their arq keys go, if they are ours.
SETTLE = (
    _OWNS
    + """
for i = 2, #ARGV do
  local id = ARGV[i]
  local leased = redis.call('HGET', KEYS[2], id)
  if leased == false or owns(id, ARGV[1]) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', 'arq:in-progress:' .. id, 'arq:retry:' .. id, 'arq:job:' .. id)
    redis.call('HDEL', KEYS[2], id)
  end
end
return 0
"""
)

# KEYS: queue, leases, counts   ARGV: token, due_ms, uncount ('1'|'0'), counter ('' for none), ids...
# Jobs given back (due at due_ms), if they are ours; how many were.
RELEASE = (
    _OWNS
    + """
local released = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  if owns(id, ARGV[1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    redis.call('DEL', 'arq:in-progress:' .. id)
    redis.call('HDEL', KEYS[2], id)
    if ARGV[3] == '1' then redis.call('DECR', 'arq:retry:' .. id) end
    released = released + 1
  end
end
if ARGV[4] ~= '' and released > 0 then redis.call('HINCRBY', KEYS[3], ARGV[4], released) end
return released
"""
)


def worker_token() -> str:
    """A token naming this worker in its locks: host and pid (so an operator can find it), and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """One job a claim took: its arq id, queue score when claimed, delivery count and arq payload."""

    job_id: str
    score: int
    job_try: int
    payload: bytes


class Leases:
    """The lease scripts for one lane's queue, held by one worker (``token``)."""

    def __init__(self, pool: Any, queue: str, lease_s: float, token: str | None = None) -> None:
        self.token = token or worker_token()
        self.lease_s = lease_s
        self.renew_s = lease_s / 3
        self._lease_ms = int(lease_s * 1000)
        self._keys = [queue, queue + LEASES_SUFFIX, queue + COUNTS_SUFFIX]
        self._claim = pool.register_script(CLAIM)
        self._renew = pool.register_script(RENEW)
        self._settle = pool.register_script(SETTLE)
        self._release = pool.register_script(RELEASE)

    async def claim(self, free: int) -> list[Claimed]:
        """Claim up to ``free`` due jobs, each leased to this worker."""
        now_ms = timestamp_ms()  # arq's clock (it rounds); a floor here would skip jobs enqueued this ms
        reply = await self._claim(keys=self._keys, args=[self.token, now_ms, self._lease_ms, free])
        return [
            Claimed(reply[i].decode(), int(float(reply[i + 1])), int(reply[i + 2]), reply[i + 3])
            for i in range(0, len(reply), 4)
        ]

    async def renew(self, job_ids: list[str]) -> list[str]:
        """Renew the leases of ``job_ids``, in one call; the ids this worker no longer holds."""
        if not job_ids:
            return []
        lost = await self._renew(keys=self._keys, args=[self.token, timestamp_ms(), self._lease_ms, *job_ids])
        return [job_id.decode() for job_id in lost]

    async def settle(self, job_ids: list[str]) -> None:
        """Remove finished jobs' arq keys (those still ours, or never leased), in one call."""
        await self._settle(keys=self._keys[:2], args=[self.token, *job_ids])

    async def release(
        self, job_ids: list[str], delay_ms: int = 0, *, uncount: bool = False, counter: str = ""
    ) -> int:
        """Hand jobs back (due ``delay_ms`` from now) if still ours; ``uncount`` takes the delivery
        back (a requeue, not a crash); ``counter`` names the count to add them to. How many were ours."""
        if not job_ids:
            return 0
        args = [self.token, timestamp_ms() + delay_ms, "1" if uncount else "0", counter, *job_ids]
        return int(await self._release(keys=self._keys, args=args))
