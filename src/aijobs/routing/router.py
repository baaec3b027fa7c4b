"""The Router runs a feature's route: each target up to ``attempts`` times, then the next target.

Each call of a target is an *attempt*, recorded whatever its outcome. The error's class decides, by
its two flags alone (never by which error it was):

- ``retry``: call the same target again after a wait: exponential backoff with full jitter
  (``uniform(0, min(cap, base * 2**n))``), but never less than the provider's ``Retry-After``
  (itself capped, so one slow answer cannot stall a job for an hour);
- ``fallback``: move on to the next target. A target the route has left is never called again in the
  same job.

An error with neither flag (a rejected input, a content filter) ends the route at once: another
provider would refuse the same input.

A route run with a :class:`Stream` hands the answer's pieces to its caller as they arrive. Until the
first piece has been handed over, a failure retries and falls back as usual; after it, the caller
has part of one target's answer, so the route ends with that failure.

With :class:`~aijobs.routing.breakers.Breakers`, a target whose breaker is open is skipped (and listed
as such), and every call's outcome is counted towards its breaker.

A route run with ``quota`` (a batch-lane job's) takes each call out of its provider's batch share
(:class:`~aijobs.routing.quotas.Quotas`). A target whose share is spent for this minute is passed
over for the route's other targets; when no target is left but such ones, the route raises
:class:`ShareSpent` and the worker puts the job back in the queue until the next minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aijobs import logs
from aijobs.errors import (
    AijobsError,
    InternalError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    SubmitUnknown,
)
from aijobs.providers.base import Adapter, Result
from aijobs.providers.sse import OnDelta
from aijobs.providers.tasks import TaskAdapter
from aijobs.routing.breakers import Breakers
from aijobs.routing.policy import Feature, RetryPolicy, Target
from aijobs.routing.quotas import Quotas, estimate_tokens
from aijobs.types.chat import ChatDelta

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Attempt:
    """One call of one target."""

    provider: str
    model: str
    started_at: float
    latency_ms: float = 0.0
    outcome: str = "ok"
    error_code: str | None = None
    retry_after_s: float | None = None
    #: Time to the first streamed token (features with a ``ttft_timeout_s``, on streaming adapters).
    ttft_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "started_at": self.started_at,
            "latency_ms": round(self.latency_ms, 3),
            "outcome": self.outcome,
            "error_code": self.error_code,
            "retry_after_s": self.retry_after_s,
            "ttft_ms": round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
        }


@dataclass(slots=True)
class Outcome:
    """A successful route: the result, the target that produced it, and every attempt made."""

    result: Result
    target: Target
    attempts: list[Attempt] = field(default_factory=list)
    #: Targets passed over because their breaker was open.
    skipped: list[str] = field(default_factory=list)

    def route(self) -> dict[str, Any]:
        route: dict[str, Any] = {
            "provider": self.target.provider,
            "model": self.target.model,
            "fallback_path": path(self.attempts),
        }
        if self.skipped:
            route["skipped"] = self.skipped
        return route


@dataclass(slots=True)
class Stream:
    """Where a streamed route's pieces go; ``started`` once one has (the route is then committed)."""

    send: OnDelta
    started: bool = False
    #: The target whose answer is streaming (set with the first piece).
    target: Target | None = None

    def __call__(self, delta: ChatDelta) -> None:
        self.started = True
        self.send(delta)


def path(attempts: list[Attempt]) -> list[str]:
    """The targets tried, in order, each once (retries of a target are attempts, not new steps)."""
    return list(dict.fromkeys(f"{a.provider}:{a.model}" for a in attempts))


class RouteFailed(Exception):
    """Every target that was tried failed; ``error`` is the last one, ``attempts`` all of them."""

    def __init__(self, error: AijobsError, attempts: list[Attempt], skipped: list[str] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts
        self.skipped = skipped or []


class ShareSpent(Exception):
    """Every target the route could still call has spent its provider's batch share for this minute."""

    def __init__(self, wait_s: float, attempts: list[Attempt]) -> None:
        super().__init__(f"batch shares spent; room again in {wait_s:.1f} s")
        self.wait_s = wait_s
        self.attempts = attempts


class Router:
    """Runs features' routes over adapters built at startup (keyed by (provider, job type))."""

    def __init__(
        self,
        adapters: Mapping[tuple[str, str], Adapter],
        rng: random.Random | None = None,
        breakers: Breakers | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._adapters = adapters
        self._random = rng or random.Random()
        self.breakers = breakers
        self.quotas = quotas

    async def run(
        self,
        feature: Feature,
        request: Any,
        targets: list[Target] | None = None,
        stream: Stream | None = None,
        attempts: list[Attempt] | None = None,
        quota: bool = False,
    ) -> Outcome:
        """Try ``feature``'s targets (or ``targets``) in order; :class:`RouteFailed` if none succeeds.

        Targets cooling down after a 429 go to the end of the order and are called once their
        cooldown is over (waiting at most ``retry_after_cap_s``); targets whose breaker is open
        are skipped. Each attempt is appended to ``attempts`` as it starts, so a caller that
        cancels the route (or cuts it at a deadline) still knows what was called.
        """
        attempts = [] if attempts is None else attempts
        skipped: list[Target] = []
        error: AijobsError | None = None
        order = targets if targets is not None else self.order(feature)
        tokens = self._tokens(request, order) if quota else None
        waits: list[float] = []
        async with contextlib.aclosing(self._admitted(feature, order, skipped, tokens, waits)) as admitted:
            async for target in admitted:
                result, error = await self._run_target(target, feature, request, attempts, stream, tokens)
                if error is None:
                    return Outcome(result, target, attempts, [str(t) for t in skipped])
                if not falls_back(feature, error) or (stream is not None and stream.started):
                    break
            else:
                if waits:
                    raise ShareSpent(min(waits), attempts)
        if error is None:
            first = skipped[0] if skipped else Target("", "")
            error = ProviderUnavailable(
                f"every target of {feature.name!r} has its circuit open: {', '.join(map(str, skipped))}",
                provider=first.provider, model=first.model,
            )  # fmt: skip
        raise RouteFailed(error, attempts, [str(t) for t in skipped])

    async def _admitted(
        self,
        feature: Feature,
        order: list[Target],
        skipped: list[Target],
        tokens: int | None,
        waits: list[float],
    ) -> AsyncGenerator[Target, None]:
        """``order`` as its breakers admit it: open ones left out (into ``skipped``), cooling ones last.
        With ``tokens`` (a batch-lane job's estimate), a target whose provider's batch share is spent
        is left out too, its wait for room added to ``waits``.

        Admission is asked just before a target's turn, since asking may take its half-open probe
        (and a share of its provider's minute).
        """
        deferred: list[tuple[float, Target]] = []
        for target in order:
            wait_s = await self.breakers.admit(target, feature.timeout_s) if self.breakers else 0.0
            if wait_s is None:
                skipped.append(target)
            elif wait_s > 0:
                deferred.append((time.monotonic() + min(wait_s, feature.retry.retry_after_cap_s), target))
            elif await self._share(target, tokens, waits):
                yield target
        for ready_at, target in sorted(deferred, key=lambda d: d[0]):
            await asyncio.sleep(max(0.0, ready_at - time.monotonic()))
            if await self._share(target, tokens, waits):
                yield target

    def _tokens(self, request: Any, order: list[Target]) -> int | None:
        """A batch-lane request's token estimate, if any of its targets' providers has a batch share."""
        if self.quotas is None or not any(self.quotas.limits(target.provider) for target in order):
            return None
        return estimate_tokens(request)

    async def _share(self, target: Target, tokens: int | None, waits: list[float]) -> bool:
        """Take one call out of the target's provider's batch share (always allowed without ``tokens``);
        when the share is spent, note the wait for room in ``waits``."""
        if tokens is None or self.quotas is None:
            return True
        wait_s = await self.quotas.take(target.provider, tokens)
        if wait_s > 0:
            waits.append(wait_s)
        return wait_s <= 0

    async def _run_target(
        self,
        target: Target,
        feature: Feature,
        request: Any,
        attempts: list[Attempt],
        stream: Stream | None,
        tokens: int | None = None,
    ) -> tuple[Any, AijobsError | None]:
        """Call ``target`` up to ``attempts`` times while its errors are retryable (each retry of a
        batch-lane job taking its own share: with none left, the route moves on)."""
        adapter = self._adapters[(target.provider, feature.type)]
        error: AijobsError | None = None
        for n in range(feature.retry.attempts):
            if n:
                await asyncio.sleep(self.wait_s(feature.retry, n, error))
                if not await self._share(target, tokens, []):
                    break
            result, error = await self._attempt(adapter, target, feature, request, attempts, stream)
            if error is None:
                return result, None
            if not (isinstance(error, ProviderError) and error.retry) or self._opened(target):
                break
            if stream is not None and stream.started:
                break
            if error.outcome_unknown and not feature.resubmit_unknown:
                break
        return None, error

    def _opened(self, target: Target) -> bool:
        return self.breakers is not None and self.breakers.tripped(target)

    def order(self, feature: Feature) -> list[Target]:
        """This job's order of targets: the route's, with each weighted group shuffled by its weights.

        Weighted sampling without replacement (Efraimidis-Spirakis): each target draws
        ``random() ** (1 / weight)`` and the group is tried in descending order of the draws.
        """
        if not feature.steps:
            return list(feature.targets)
        order: list[Target] = []
        for step in feature.steps:
            if len(step) == 1:
                order.append(step[0][0])
            else:
                draws = sorted(((self._random.random() ** (1 / w), t) for t, w in step), key=lambda d: -d[0])
                order.extend(target for _, target in draws)
        return order

    def wait_s(self, policy: RetryPolicy, retry_number: int, error: AijobsError | None) -> float:
        """How long to wait before retry ``retry_number`` (1-based) after ``error``."""
        ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2 ** (retry_number - 1))
        wait = self._random.uniform(0, ceiling)
        if isinstance(error, ProviderError) and error.retry_after_s:
            wait = max(wait, min(error.retry_after_s, policy.retry_after_cap_s))
        return wait

    async def _attempt(
        self,
        adapter: Adapter,
        target: Target,
        feature: Feature,
        request: Any,
        attempts: list[Attempt],
        stream: Stream | None,
    ) -> tuple[Any, AijobsError | None]:
        attempt = Attempt(target.provider, target.model, started_at=time.time())
        attempts.append(attempt)
        started = time.perf_counter()
        try:
            with logs.bind(target=str(target), attempt=len(attempts)):
                async with asyncio.timeout(feature.timeout_s):
                    result = await self._call(adapter, target, feature, request, attempt, started, stream)
        except asyncio.CancelledError:  # cut off from outside (a deadline, a cancel): not the target's doing
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            attempt.outcome = "canceled"
            raise
        except Exception as exc:  # every failure becomes an attempt record, then a decision
            error = _as_error(exc, target, feature.timeout_s, submit=isinstance(adapter, TaskAdapter))
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            attempt.outcome, attempt.error_code = "error", error.code
            if isinstance(error, ProviderError):
                attempt.retry_after_s = error.retry_after_s
            await self._count(target, attempt, error)
            return None, error
        attempt.latency_ms = (time.perf_counter() - started) * 1000
        await self._count(target, attempt, None)
        return result, None

    async def _call(
        self,
        adapter: Adapter,
        target: Target,
        feature: Feature,
        request: Any,
        attempt: Attempt,
        started: float,
        stream: Stream | None,
    ) -> Any:
        """``adapter.run``; streamed (when it can) for a :class:`Stream` or a time-to-first-token bound."""
        streaming = getattr(adapter, "run_streaming", None)
        if streaming is None or (feature.ttft_timeout_s is None and stream is None):
            return await adapter.run(target.model, request)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_delta(delta: ChatDelta) -> None:
            if not first.done():
                attempt.ttft_ms = (time.perf_counter() - started) * 1000
                first.set_result(None)
            if stream is not None:
                stream.target = target
                stream(delta)

        if feature.ttft_timeout_s is None:
            return await streaming(target.model, request, on_delta)
        call = asyncio.ensure_future(streaming(target.model, request, on_delta))
        try:
            done, _ = await asyncio.wait(
                {call, first}, timeout=feature.ttft_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise ProviderTimeout(
                    f"{target} sent no first token within {feature.ttft_timeout_s:g} s",
                    provider=target.provider, model=target.model,
                )  # fmt: skip
            return await call
        finally:  # cut off (no first token, the attempt's timeout, a cancelled job): stop the stream too
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call

    async def _count(self, target: Target, attempt: Attempt, error: AijobsError | None) -> None:
        if self.breakers is None:
            return
        try:
            await self.breakers.record(target, attempt.latency_ms, error)
        except Exception as exc:  # a Redis blip must not fail a call that already happened
            log.warning("could not record a call of %s for its breaker: %s", target, exc)


def falls_back(feature: Feature, error: AijobsError) -> bool:
    """Whether ``error`` moves ``feature``'s route on: its own ``fallback_on`` list, else the error's flag."""
    if not isinstance(error, ProviderError):
        return False
    if error.outcome_unknown and not feature.resubmit_unknown:
        return False  # the task may exist upstream: another provider would be paid as well
    if feature.fallback_on is not None:
        return error.code in feature.fallback_on
    return error.fallback


def _as_error(exc: Exception, target: Target, timeout_s: float, *, submit: bool = False) -> AijobsError:
    if isinstance(exc, AijobsError):
        return exc
    if isinstance(exc, TimeoutError):
        message = f"{target} did not answer within {timeout_s:g} s"
        if submit:  # cut off mid-submit: the request may have reached the provider and started a task
            message += "; the task may exist upstream, so it is not submitted again"
            return SubmitUnknown(message, provider=target.provider, model=target.model)
        return ProviderTimeout(message, provider=target.provider, model=target.model)
    log.exception("adapter for %s raised unexpectedly", target)
    return InternalError(f"unexpected error calling {target}")
