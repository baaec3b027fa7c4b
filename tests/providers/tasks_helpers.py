"""Drive media adapters against their fakes: build one, submit, poll to the end, download outputs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
from pydantic import BaseModel

from aijobs.providers.base import ProviderContext, Task
from aijobs.providers.tasks import TERMINAL_STATES, Poll, TaskAdapter
from aijobs.routing.config import ProviderConfig
from aijobs.types.common import Media, RemoteFile

API_KEY = "Tk9PlainLettersAndDigits0123456789abcdef"  # no prefix: redaction must not rely on one


def context(
    http: httpx2.AsyncClient,
    kind: str,
    base_url: str,
    *,
    api_key: str | None = API_KEY,
    preset: str | None = None,
    model_options: dict[str, BaseModel] | None = None,
) -> ProviderContext:
    config = ProviderConfig(kind=kind, preset=preset, base_url=base_url, api_key_env="TEST_KEY")
    return ProviderContext(kind, config, api_key, http, model_options or {})


async def drive(
    adapter: TaskAdapter, model: str, request: Any, timeout_s: float = 15.0
) -> tuple[Task, list[Poll]]:
    """Submit, then poll every 0.1 s until the task ends; the task and every poll seen."""
    submitted = await adapter.run(model, request)
    polls: list[Poll] = []
    async with asyncio.timeout(timeout_s):
        while True:
            poll = await adapter.poll(model, submitted.task)
            polls.append(poll)
            if poll.state in TERMINAL_STATES:
                return submitted.task, polls
            await asyncio.sleep(0.1)


async def fetch(http: httpx2.AsyncClient, item: Media | RemoteFile) -> tuple[bytes, str]:
    """An output's bytes and content type, downloaded as the worker would."""
    if isinstance(item, Media):
        return item.data, item.content_type
    response = await http.get(item.url, headers=dict(item.headers))
    response.raise_for_status()
    return response.content, item.content_type or response.headers["content-type"]


async def farm(http: httpx2.AsyncClient, fakes_url: str, what: str = "tasks") -> Any:
    """The farm's ``tasks`` or ``requests`` journal."""
    response = await http.get(f"{fakes_url}/_media/{what}")
    response.raise_for_status()
    return response.json()


async def inject(http: httpx2.AsyncClient, fakes_url: str, **fault: Any) -> None:
    """Queue one fault (``provider``, ``step``, ``status``, ``times``, ``retry_after``, ``delay_s``,
    ``hold_s``, ``answer_delay_s``, ``body``; see :mod:`tests.fakes.media.farm`)."""
    (await http.post(f"{fakes_url}/_media/faults", json={"faults": [fault]})).raise_for_status()
