"""The baseline worker for (b0): the same job path with breakers, the ledger and budgets taken out.

(b) / (b0) is what routing + ledger + metrics cost end to end. Only this benchmark runs it; the
service itself has no switch to turn them off.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from aijobs import worker, worker_process
from aijobs.jobs import JobStatus
from aijobs.routing import Feature, Routing, Target, load_policy
from aijobs.routing.budgets import Budgets
from aijobs.settings import Settings
from aijobs.store import JobStore, Transition


class BareStore(JobStore):
    """Drops ledger entries: status changes only."""

    async def transition(self, job_id: str, to: JobStatus, **kwargs: Any) -> Transition:
        kwargs.pop("ledger", None)
        return await super().transition(job_id, to, **kwargs)


class NoBudgets(Budgets):
    """Never reads spend."""

    async def targets(self, feature: Feature) -> list[Target] | None:
        return None


async def start_bare(settings: Settings, routing: Routing, env: dict[str, str]) -> worker.Runtime:
    runtime = await _start(settings, routing, env)
    runtime.router.breakers = None
    runtime.store = BareStore(runtime.redis, settings.job_ttl_s)
    runtime.budgets = NoBudgets(runtime.redis)
    return runtime


_start = worker.Runtime.start
worker.Runtime.start = start_bare  # type: ignore[method-assign]


def main() -> int:
    settings = Settings()
    routing = load_policy(settings.routing_file, dict(os.environ))
    return 0 if asyncio.run(worker_process.serve(settings, routing, ["interactive"], dict(os.environ))) else 1


if __name__ == "__main__":
    sys.exit(main())
