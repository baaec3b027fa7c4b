"""The adapter seam: one class per (kind, job type) with one method, ``run(model, request)``.

Adapters only translate: request → wire call, wire answer → result, wire error → an error from
:mod:`aijobs.errors`. They never retry, fall back, touch Redis or store media; the Router and the
worker do that. Each adapter declares ``Options``, the pydantic model its per-model settings in
``routing.toml`` (``[providers.NAME.models.MODEL]``) must satisfy, checked once at startup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx2
from pydantic import BaseModel, ConfigDict

from aijobs.routing.config import ProviderConfig
from aijobs.tokens import count_tokens
from aijobs.types.chat import ChatResult
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.embed import EmbedResult
from aijobs.types.rerank import RerankResult


class NoOptions(BaseModel):
    """Per-model options for adapters that take none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class MediaResult:
    """What a media adapter returns: the files (in hand, or to download), and what they cost in units."""

    items: Sequence[Media | RemoteFile]
    model: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Task:
    """A long-running task upstream: the provider's id, and what polling it needs (JSON-safe)."""

    id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a task adapter's ``run`` (its submit) returns: a task to poll, not yet a result."""

    task: Task
    model: str


Result = ChatResult | EmbedResult | RerankResult | MediaResult | Submitted


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What an adapter is built with: its provider's name and config, key, and the shared client."""

    name: str
    config: ProviderConfig
    api_key: str | None
    http: httpx2.AsyncClient
    model_options: Mapping[str, BaseModel]


class Adapter(Protocol):
    """One job type for one kind. Built once per provider at startup."""

    Options: ClassVar[type[BaseModel]]

    def __init__(self, context: ProviderContext) -> None: ...

    async def run(self, model: str, request: Any) -> Result:
        """Run ``request`` (the job type's input model) on ``model``; raise a ProviderError on failure."""
        ...


EmbedBatch = Callable[[list[str]], Awaitable[tuple[list[list[float]], int | None]]]


async def embed_in_batches(texts: list[str], size: int, embed: EmbedBatch) -> tuple[list[list[float]], Usage]:
    """Embed ``texts`` in concurrent batches of at most ``size`` (providers cap a call's inputs).

    ``embed(batch)`` returns the batch's vectors and the tokens the provider counted (``None`` when it
    reports none). The vectors come back in input order; the usage is estimated, and says so, unless
    every batch was counted.
    """
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    answers = await asyncio.gather(*(embed(batch) for batch in batches))
    vectors = [vector for batch_vectors, _ in answers for vector in batch_vectors]
    counted = [tokens for _, tokens in answers]
    if all(tokens is not None for tokens in counted):
        return vectors, Usage(input_tokens=sum(int(t or 0) for t in counted))
    return vectors, Usage(input_tokens=sum(count_tokens(t) for t in texts), estimated=True)


def options_for(context: ProviderContext, model: str, default: BaseModel) -> Any:
    """The validated options for ``model``, or ``default`` when the file gave none."""
    return context.model_options.get(model, default)
