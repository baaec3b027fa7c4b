"""Daily budgets: a feature's estimated spend per UTC day, and what happens once it is spent.

Spend is added by the ledger as jobs finish (:mod:`aijobs.ledger`). A process reads a feature's spend
at most every ``refresh_s``, so concurrent jobs can overshoot a budget by what they spend in that
time; budgets bound estimated cost, they are not a billing hard stop.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from aijobs.errors import BudgetExceeded
from aijobs.keys import Keys
from aijobs.ledger import day_of
from aijobs.routing.policy import Feature, Target


class Budgets:
    """Checks features' daily budgets against the spend recorded in Redis."""

    def __init__(self, redis: Redis, refresh_s: float = 1.0) -> None:
        self.redis = redis
        self.refresh_s = refresh_s
        self._spent: dict[tuple[str, str], tuple[float, float]] = {}

    async def spent_usd(self, feature: str, day: str | None = None) -> float:
        """``feature``'s estimated spend on ``day`` (default today, UTC)."""
        day = day or day_of(time.time())
        now = time.monotonic()
        hit = self._spent.get((feature, day))
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self.redis.hget(Keys.spend(day), feature)  # type: ignore[misc]
        spent = float(raw or 0)
        if len(self._spent) > 1000:
            self._spent.clear()
        self._spent[(feature, day)] = (now + self.refresh_s, spent)
        return spent

    async def targets(self, feature: Feature) -> list[Target] | None:
        """The targets to use instead of the route (the downgrade), ``None`` for the route itself.

        Raises :class:`~aijobs.errors.BudgetExceeded` when the budget is spent and the feature
        rejects rather than downgrades.
        """
        if feature.budget_usd_per_day is None:
            return None
        spent = await self.spent_usd(feature.name)
        if spent < feature.budget_usd_per_day:
            return None
        if feature.downgrade is not None:
            return [feature.downgrade]
        raise BudgetExceeded(
            f"feature {feature.name!r} has spent its daily budget "
            f"(${spent:.4f} of ${feature.budget_usd_per_day:g}); it resets at 00:00 UTC"
        )
