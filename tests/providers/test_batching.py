"""Embedding inputs larger than a provider's batch limit are split, sent together, and kept in order."""

from __future__ import annotations

import httpx2
import pytest

from aijobs.providers.base import ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.config import ProviderConfig
from aijobs.types.embed import EmbedInput, EmbedResult


@pytest.mark.parametrize(("kind", "path", "model"), [("gemini", "/gemini", "gemini-embedding-001"),
                                                     ("cohere", "/cohere/v2", "embed-v4.0")])  # fmt: skip
async def test_large_inputs_are_split_into_batches_in_order(
    fakes_url: str, kind: str, path: str, model: str
) -> None:
    async with httpx2.AsyncClient() as http:
        await http.post(fakes_url + "/_llmock/reset")
        config = ProviderConfig(kind=kind, base_url=fakes_url + path)
        adapter = ADAPTERS[(kind, "embed")](ProviderContext("p", config, "k", http, {}))
        texts = [f"document number {i}" for i in range(250)]
        result = await adapter.run(model, EmbedInput(input=texts))
        single = await adapter.run(model, EmbedInput(input=[texts[137], texts[3]]))
        sent = (await http.get(fakes_url + "/_llmock/requests")).json()
    assert isinstance(result, EmbedResult) and isinstance(single, EmbedResult)
    assert len(result.embeddings) == 250
    assert result.embeddings[137] == single.embeddings[0]  # the order survives the split
    assert result.embeddings[3] == single.embeddings[1]
    assert len(sent) == 4  # three batches, then one for the pair


async def test_openai_kind_batches_at_the_presets_limit(llmock_url: str) -> None:
    async with httpx2.AsyncClient() as http:
        await http.post(llmock_url + "/_llmock/reset")
        config = ProviderConfig(kind="openai", preset="qwen", base_url=llmock_url + "/v1")
        adapter = ADAPTERS[("openai", "embed")](ProviderContext("qwen", config, "k", http, {}))
        result = await adapter.run("text-embedding-v3", EmbedInput(input=[f"t{i}" for i in range(25)]))
        sent = (await http.get(llmock_url + "/_llmock/requests")).json()
    assert isinstance(result, EmbedResult)
    assert len(result.embeddings) == 25
    assert sent["count"] == 3  # DashScope takes 10 inputs a call: 10 + 10 + 5
