"""The adapter registry: (kind, job type) → adapter class. Adding a provider is one line here.

The table is read-only; :func:`build_adapters` instantiates one adapter per (provider, job type) at
startup with the shared HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import httpx2

from aijobs.providers import (
    anthropic,
    ark,
    bfl,
    cohere,
    elevenlabs,
    fal,
    gemini,
    kling,
    minimax,
    openai,
    openai_media,
    rerank,
    sim,
    veo,
    wan,
)
from aijobs.providers.base import Adapter, ProviderContext
from aijobs.routing.policy import Routing

ADAPTERS: Mapping[tuple[str, str], type[Adapter]] = MappingProxyType(
    {
        ("sim", "chat"): sim.SimChat,
        ("sim", "embed"): sim.SimEmbed,
        ("sim", "rerank"): sim.SimRerank,
        ("sim", "image"): sim.SimImage,
        ("sim", "speech"): sim.SimSpeech,
        ("sim", "video"): sim.SimVideo,
        ("openai", "chat"): openai.OpenAIChat,
        ("openai", "embed"): openai.OpenAIEmbed,
        ("anthropic", "chat"): anthropic.AnthropicChat,
        ("gemini", "chat"): gemini.GeminiChat,
        ("gemini", "embed"): gemini.GeminiEmbed,
        ("cohere", "rerank"): rerank.CohereRerank,
        ("cohere", "embed"): cohere.CohereEmbed,
        ("jina", "rerank"): rerank.JinaRerank,
        ("voyage", "rerank"): rerank.VoyageRerank,
        ("dashscope", "rerank"): rerank.DashScopeRerank,
        ("openai", "image"): openai_media.OpenAIImage,
        ("openai", "speech"): openai_media.OpenAISpeech,
        ("elevenlabs", "speech"): elevenlabs.ElevenLabsSpeech,
        ("minimax", "speech"): minimax.MiniMaxSpeech,
        # Long-running tasks (submit → poll → fetch): see aijobs.providers.tasks and aijobs.polling.
        ("minimax", "video"): minimax.MiniMaxVideo,
        ("kling", "video"): kling.KlingVideo,
        ("ark", "video"): ark.SeedanceVideo,
        ("gemini", "video"): veo.VeoVideo,
        ("dashscope", "video"): wan.WanVideo,
        ("dashscope", "image"): wan.WanImage,
        ("bfl", "image"): bfl.BflImage,
        ("fal", "image"): fal.FalImage,
        ("fal", "video"): fal.FalVideo,
    }
)


def build_adapters(
    routing: Routing, http: httpx2.AsyncClient, env: Mapping[str, str]
) -> dict[tuple[str, str], Adapter]:
    """One adapter per (enabled provider, job type its kind serves): routes use some, direct calls
    (``provider:model`` on the OpenAI-compatible surface) any."""
    adapters: dict[tuple[str, str], Adapter] = {}
    for name, provider in routing.providers.items():
        api_key = env.get(provider.config.api_key_env) if provider.config.api_key_env else None
        context = ProviderContext(name, provider.config, api_key, http, provider.model_options)
        for (kind, job_type), cls in ADAPTERS.items():
            if kind == provider.config.kind:
                adapters[(name, job_type)] = cls(context)
    return adapters
