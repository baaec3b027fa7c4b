"""Redis key names, in one place: no other module spells a key.

Layout (prefix ``aijobs:``):

- ``job:{id}``            hash: the record; scalar fields plus JSON fields (input, output, …)
- ``jobs:{tenant}``       sorted set, all scores 0: the tenant's job ids in id (= time) order
- ``idem:{tenant}:{h}``   string ``"{body_hash} {job_id}"`` for an Idempotency-Key, 24 h
- ``pending:{lane}``      sorted set of a lane's queued job ids by creation time, for recovery
- ``apikey:{sha256}``     hash: the tenant an API key belongs to
- ``ledger:{day}``        stream: the day's job records; ``ledger-exported:{day}`` once exported
- ``usage:{day}``, ``usage:total``  hashes: ledger counters per cell (see :mod:`aijobs.ledger`)
- ``spend:{day}``         hash: estimated USD per feature (budgets)
- ``file:{id}``           string: an uploaded file's record (JSON), expiring with the file
- ``breaker:{target}``    hash: a circuit breaker's state; ``breaker:{target}:{n}`` its window buckets
- ``ev:{job_id}``         stream: a job's events (also the pub/sub channel announcing each new one)
- ``whep:{id}``           hash: a registered webhook endpoint; ``wheps:{tenant}`` the tenant's ids (set)
- ``whsecret:{tenant}``   hash: the signing secrets for a tenant's per-job webhooks
- ``whd:{id}``            hash: a webhook delivery and its attempts; ``whd-job:{job_id}`` a job's ids
- ``wh-dead:{tenant}``    sorted set: dead-lettered deliveries by time; ``wh-gone:{job_id}`` a job's
  webhook URL answered 410; ``wh-stats`` delivery counters
"""

from __future__ import annotations


class Keys:
    """Redis key names, in one place."""

    prefix = "aijobs:"

    @classmethod
    def job(cls, job_id: str) -> str:
        return f"{cls.prefix}job:{job_id}"

    @classmethod
    def tenant_jobs(cls, tenant: str) -> str:
        return f"{cls.prefix}jobs:{tenant}"

    @classmethod
    def idempotency(cls, tenant: str, key_hash: str) -> str:
        return f"{cls.prefix}idem:{tenant}:{key_hash}"

    @classmethod
    def batch(cls, batch_id: str) -> str:
        return f"{cls.prefix}batch:{batch_id}"

    @classmethod
    def batch_lines(cls, batch_id: str) -> str:
        return f"{cls.prefix}batch:{batch_id}:lines"

    @classmethod
    def batch_open(cls, batch_id: str) -> str:
        return f"{cls.prefix}batch:{batch_id}:open"

    @classmethod
    def batch_answers(cls, batch_id: str) -> str:
        """The provider batch's result lines by line number, until the batch is finalized."""
        return f"{cls.prefix}batch:{batch_id}:answers"

    @classmethod
    def tenant_batches(cls, tenant: str) -> str:
        return f"{cls.prefix}batches:{tenant}"

    @classmethod
    def pending(cls, lane: str) -> str:
        return f"{cls.prefix}pending:{lane}"

    @classmethod
    def api_key(cls, key_hash: str) -> str:
        return f"{cls.prefix}apikey:{key_hash}"

    @classmethod
    def ledger(cls, day: str) -> str:
        return f"{cls.prefix}ledger:{day}"

    @classmethod
    def ledger_exported(cls, day: str) -> str:
        return f"{cls.prefix}ledger-exported:{day}"

    @classmethod
    def usage(cls, day: str) -> str:
        return f"{cls.prefix}usage:{day}"

    @classmethod
    def usage_total(cls) -> str:
        return f"{cls.prefix}usage:total"

    @classmethod
    def spend(cls, day: str) -> str:
        return f"{cls.prefix}spend:{day}"

    @classmethod
    def file(cls, file_id: str) -> str:
        return f"{cls.prefix}file:{file_id}"

    @classmethod
    def breaker(cls, target: str) -> str:
        return f"{cls.prefix}breaker:{target}"

    @classmethod
    def breaker_bucket(cls, target: str, bucket: int) -> str:
        return f"{cls.prefix}breaker:{target}:{bucket}"

    @classmethod
    def quota(cls, provider: str, minute: int, kind: str) -> str:
        """Batch traffic's ``kind`` (``requests``/``tokens``) sent to ``provider`` in a UTC minute."""
        return f"{cls.prefix}quota:{provider}:{minute}:{kind}"

    @classmethod
    def events(cls, job_id: str) -> str:
        return f"{cls.prefix}ev:{job_id}"

    @classmethod
    def endpoint(cls, endpoint_id: str) -> str:
        return f"{cls.prefix}whep:{endpoint_id}"

    @classmethod
    def tenant_endpoints(cls, tenant: str) -> str:
        return f"{cls.prefix}wheps:{tenant}"

    @classmethod
    def webhook_secret(cls, tenant: str) -> str:
        return f"{cls.prefix}whsecret:{tenant}"

    @classmethod
    def delivery(cls, delivery_id: str) -> str:
        return f"{cls.prefix}whd:{delivery_id}"

    @classmethod
    def delivery_attempts(cls, delivery_id: str) -> str:
        return f"{cls.prefix}whd:{delivery_id}:attempts"

    @classmethod
    def job_deliveries(cls, job_id: str) -> str:
        return f"{cls.prefix}whd-job:{job_id}"

    @classmethod
    def dead_letters(cls, tenant: str) -> str:
        return f"{cls.prefix}wh-dead:{tenant}"

    @classmethod
    def webhook_gone(cls, job_id: str) -> str:
        return f"{cls.prefix}wh-gone:{job_id}"

    @classmethod
    def webhook_stats(cls) -> str:
        return f"{cls.prefix}wh-stats"
