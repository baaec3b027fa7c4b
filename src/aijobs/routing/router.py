"""The Router runs a feature's route: one target after another until one succeeds.

Each call of a target is an *attempt*, recorded whatever its outcome. A provider error's class decides
whether the next target is tried (``fallback``); the Router never inspects which error it was beyond
that flag. Retries with backoff, circuit breakers and budgets extend this class (issue 4) without
touching adapters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aijobs.errors import AijobsError, InternalError, ProviderError, ProviderTimeout
from aijobs.providers.base import Adapter, Result
from aijobs.routing.policy import Feature, Target

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "started_at": self.started_at,
            "latency_ms": round(self.latency_ms, 3),
            "outcome": self.outcome,
            "error_code": self.error_code,
            "retry_after_s": self.retry_after_s,
        }


@dataclass(slots=True)
class Outcome:
    """A successful route: the result, the target that produced it, and every attempt made."""

    result: Result
    target: Target
    attempts: list[Attempt] = field(default_factory=list)

    def route(self) -> dict[str, Any]:
        return {
            "provider": self.target.provider,
            "model": self.target.model,
            "fallback_path": [f"{a.provider}:{a.model}" for a in self.attempts],
        }


class RouteFailed(Exception):
    """Every target that was tried failed; ``error`` is the last one, ``attempts`` all of them."""

    def __init__(self, error: AijobsError, attempts: list[Attempt]) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


class Router:
    """Runs features' routes over adapters built at startup (keyed by (provider, job type))."""

    def __init__(self, adapters: Mapping[tuple[str, str], Adapter]) -> None:
        self._adapters = adapters

    async def run(self, feature: Feature, request: Any) -> Outcome:
        """Try ``feature``'s targets in order; raise :class:`RouteFailed` when none succeeds."""
        attempts: list[Attempt] = []
        error: AijobsError | None = None
        for target in feature.targets:
            adapter = self._adapters[(target.provider, feature.type)]
            attempt = Attempt(target.provider, target.model, started_at=time.time())
            attempts.append(attempt)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(feature.timeout_s):
                    result = await adapter.run(target.model, request)
            except Exception as exc:  # every failure becomes an attempt record, then a decision
                error = _as_error(exc, target, feature.timeout_s)
                attempt.latency_ms = (time.perf_counter() - started) * 1000
                attempt.outcome, attempt.error_code = "error", error.code
                if isinstance(error, ProviderError):
                    attempt.retry_after_s = error.retry_after_s
                    if error.fallback:
                        continue
                raise RouteFailed(error, attempts) from exc
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            return Outcome(result, target, attempts)
        assert error is not None
        raise RouteFailed(error, attempts)


def _as_error(exc: Exception, target: Target, timeout_s: float) -> AijobsError:
    if isinstance(exc, AijobsError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(
            f"{target} did not answer within {timeout_s:g} s", provider=target.provider, model=target.model
        )
    log.exception("adapter for %s raised unexpectedly", target)
    return InternalError(f"unexpected error calling {target}")
