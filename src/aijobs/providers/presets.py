"""Presets: known vendors of the ``openai`` kind, with their base URLs and wire quirks.

A provider in ``routing.toml`` names a preset (``preset = "deepseek"``) and inherits its base URL
and quirks; ``base_url`` overrides the URL (a region, a proxy, a self-hosted server). A vendor not
listed here is ``preset = "custom"`` with a ``base_url``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Preset:
    """One vendor's OpenAI-compatible endpoint and how it differs from OpenAI's."""

    base_url: str | None
    #: Header carrying the key, and its prefix (Azure: ``api-key`` with no ``Bearer``).
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    #: Where the output-token limit goes: OpenAI's newer models and MiniMax reject ``max_tokens``.
    max_tokens_field: str = "max_tokens"
    #: Whether ``response_format: {"type": "json_schema"}`` is accepted; if not, ``json_object`` is sent.
    json_schema: bool = True
    #: Whether ``/embeddings`` exists, and how many inputs one call takes.
    embeddings: bool = True
    embed_batch: int = 2048
    region: str = "global"
    #: Whether ``extra_content`` (Gemini's thought signatures) is sent back: only Gemini reads it.
    extra_content: bool = False


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "openai": Preset("https://api.openai.com/v1", max_tokens_field="max_completion_tokens"),
        "azure-openai": Preset(
            None, auth_header="api-key", auth_prefix="", max_tokens_field="max_completion_tokens"
        ),
        "deepseek": Preset("https://api.deepseek.com", embeddings=False, region="cn"),
        "qwen": Preset("https://dashscope.aliyuncs.com/compatible-mode/v1", embed_batch=10, region="cn"),
        "qwen-intl": Preset("https://dashscope-intl.aliyuncs.com/compatible-mode/v1", embed_batch=10),
        "moonshot": Preset("https://api.moonshot.cn/v1", embeddings=False, region="cn"),
        "moonshot-global": Preset("https://api.moonshot.ai/v1", embeddings=False),
        "zhipu": Preset("https://open.bigmodel.cn/api/paas/v4", embed_batch=64, region="cn"),
        "doubao": Preset("https://ark.cn-beijing.volces.com/api/v3", region="cn"),
        "doubao-intl": Preset("https://ark.ap-southeast.bytepluses.com/api/v3"),
        "qianfan": Preset("https://qianfan.baidubce.com/v2", region="cn"),
        "spark": Preset(
            "https://spark-api-open.xf-yun.com/v1", json_schema=False, embeddings=False, region="cn"
        ),
        "minimax": Preset(
            "https://api.minimax.io/v1",
            max_tokens_field="max_completion_tokens",
            json_schema=False,
            embeddings=False,
        ),
        "minimax-cn": Preset(
            "https://api.minimaxi.com/v1",
            max_tokens_field="max_completion_tokens",
            json_schema=False,
            embeddings=False,
            region="cn",
        ),
        "siliconflow": Preset("https://api.siliconflow.cn/v1", region="cn"),
        "mistral": Preset("https://api.mistral.ai/v1"),
        "xai": Preset("https://api.x.ai/v1", embeddings=False),
        "groq": Preset("https://api.groq.com/openai/v1", embeddings=False),
        "together": Preset("https://api.together.xyz/v1"),
        "openrouter": Preset("https://openrouter.ai/api/v1", embeddings=False),
        "gemini-openai": Preset(
            "https://generativelanguage.googleapis.com/v1beta/openai", extra_content=True
        ),
        "ollama": Preset("http://127.0.0.1:11434/v1"),
        "vllm": Preset("http://127.0.0.1:8000/v1"),
        "cohere": Preset("https://api.cohere.com/v2"),
        "custom": Preset(None),
    }
)


#: Where each kind's own service runs, for kinds without presets (the sim belongs to no region).
KIND_REGIONS: Mapping[str, str] = MappingProxyType(
    {
        **{"anthropic": "global", "gemini": "global", "jina": "global", "voyage": "global"},
        **{"bfl": "global", "fal": "global", "elevenlabs": "global", "kling": "global", "minimax": "global"},
        **{"dashscope": "cn", "ark": "cn"},
    }
)


def region_of(kind: str, preset: str | None, override: str | None = None) -> str | None:
    """``cn`` or ``global`` for a provider: its own setting, else its preset's, else its kind's."""
    if override:
        return override
    if kind in ("openai", "cohere"):
        return preset_for(preset if preset or kind == "openai" else "cohere").region
    return KIND_REGIONS.get(kind)


def preset_for(name: str | None) -> Preset:
    """The named preset (``openai`` when none is named); KeyError for an unknown name."""
    return PRESETS[name or "openai"]
