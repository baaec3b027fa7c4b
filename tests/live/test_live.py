"""One small real call per configured provider, to check keys and endpoints in one command:

    AIJOBS_LIVE=1 DEEPSEEK_API_KEY=... .venv/bin/pytest tests/live -q [AIJOBS_ROUTING_FILE=routing.toml]

Skipped unless ``AIJOBS_LIVE=1``; a provider is tried only when its ``api_key_env`` is set. Each call
uses a model the routing file routes to, so a passing run means the file works as written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx2
import pytest

from aijobs.providers.base import ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.config import load_routing
from aijobs.types.chat import ChatInput, ChatResult
from aijobs.types.embed import EmbedInput, EmbedResult
from aijobs.types.rerank import RerankInput, RerankResult

LIVE = os.environ.get("AIJOBS_LIVE") == "1"
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not LIVE, reason="set AIJOBS_LIVE=1 to call real providers"),
]

REQUESTS: dict[str, Any] = {
    "chat": ChatInput.model_validate(
        {"messages": [{"role": "user", "content": "Reply with the word ok."}], "max_tokens": 16}
    ),
    "embed": EmbedInput(input=["ping"]),
    "rerank": RerankInput(query="refund", documents=["Refunds take 14 days.", "The office dog."], top_n=1),
}


def configured() -> list[tuple[str, str, str]]:
    """``(provider, job type, model)`` for each keyed provider, once per job type it serves."""
    if not LIVE:
        return []
    config = load_routing(Path(os.environ.get("AIJOBS_ROUTING_FILE", "routing.toml")))
    seen: dict[tuple[str, str], str] = {}
    for feature in config.features.values():
        for target in feature.flat_route():
            provider, _, model = target.partition(":")
            spec = config.providers[provider]
            keyed = spec.api_key_env is None or os.environ.get(spec.api_key_env)
            if keyed and (spec.kind, feature.type) in ADAPTERS and feature.type in REQUESTS:
                seen.setdefault((provider, feature.type), model)
    return [(provider, job_type, model) for (provider, job_type), model in seen.items()]


@pytest.mark.parametrize(("provider", "job_type", "model"), configured() or [("none", "chat", "none")])
async def test_one_small_call(provider: str, job_type: str, model: str) -> None:
    if provider == "none":
        pytest.skip("no provider in the routing file has its key set")
    config = load_routing(Path(os.environ.get("AIJOBS_ROUTING_FILE", "routing.toml")))
    spec = config.providers[provider]
    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    async with httpx2.AsyncClient() as http:
        adapter = ADAPTERS[(spec.kind, job_type)](ProviderContext(provider, spec, key, http, {}))
        result = await adapter.run(model, REQUESTS[job_type])
    if isinstance(result, ChatResult):
        assert result.message.content
        assert result.usage.output_tokens > 0
    elif isinstance(result, EmbedResult):
        assert len(result.embeddings) == 1 and len(result.embeddings[0]) > 8
    else:
        assert isinstance(result, RerankResult)
        assert result.results[0].index == 0
