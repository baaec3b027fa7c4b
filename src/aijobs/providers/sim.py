"""The ``sim`` kind: a clearly labelled simulator provider that does real work of each kind.

It is what ``routing.dev.toml`` routes to, so ``make run`` works with no provider keys. It is never a
silent fallback: it serves a feature only when ``routing.toml`` names a ``sim`` target explicitly.

- chat: a reply built from the last user message, honest token counts, tool calls when tools are
  required, JSON when a JSON response format is asked for, ``length`` when ``max_tokens`` cuts it.
- embed: feature-hashed word and character-trigram vectors, L2-normalised: stable, and texts that
  share words are close.
- rerank: Okapi BM25 over the documents, squashed into (0, 1).
- image / speech / video: valid PNG/JPEG/WebP, WAV (or raw PCM) and animated GIF files.

Per-model options (``[providers.sim.models.NAME]``): ``latency_ms`` and ``failure_rate``. Failures
are deterministic in the model and the input, so a test or a demo can rely on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import Counter
from typing import ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from aijobs.errors import ProviderRejected, ProviderUnavailable
from aijobs.providers import sim_media
from aijobs.providers.base import MediaResult, ProviderContext, options_for
from aijobs.providers.sse import OnDelta
from aijobs.tokens import count_tokens, split_tokens
from aijobs.types.chat import (
    AssistantMessage,
    ChatDelta,
    ChatInput,
    ChatResult,
    FinishReason,
    FunctionCall,
    ToolCall,
)
from aijobs.types.common import Media, Usage
from aijobs.types.embed import EmbedInput, EmbedResult
from aijobs.types.image import ImageInput
from aijobs.types.rerank import RerankHit, RerankInput, RerankResult
from aijobs.types.speech import SpeechInput
from aijobs.types.video import VideoInput

_WORD = re.compile(r"\w+", re.UNICODE)
DEFAULT_DIMENSIONS = 256


class SimOptions(BaseModel):
    """Simulator knobs for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0, ge=0, le=600_000)
    failure_rate: float = Field(default=0, ge=0, le=1)


_NO_OPTIONS = SimOptions()


class _Sim:
    """Shared behaviour: wait the configured latency, then fail deterministically at the set rate."""

    Options: ClassVar[type[BaseModel]] = SimOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    async def _simulate(self, model: str, request: BaseModel) -> None:
        options: SimOptions = options_for(self.context, model, _NO_OPTIONS)
        if options.latency_ms:
            await asyncio.sleep(options.latency_ms / 1000)
        if options.failure_rate:
            digest = hashlib.blake2b(model.encode() + request.model_dump_json().encode(), digest_size=8)
            if int.from_bytes(digest.digest(), "big") / 2**64 < options.failure_rate:
                raise ProviderUnavailable(
                    "simulated provider failure", provider=self.context.name, model=model, status=503
                )


class SimChat(_Sim):
    async def run(self, model: str, request: ChatInput) -> ChatResult:
        await self._simulate(model, request)
        prompt_tokens = sum(count_tokens(m.text()) for m in request.messages)
        last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
        if request.tools and request.tool_choice not in (None, "auto", "none"):
            return self._tool_call(model, request, last_user, prompt_tokens)
        text = f"Simulated reply to: {last_user.strip()[:400]}"
        if request.response_format and request.response_format.type != "text":
            text = orjson.dumps({"reply": text}).decode()
        tokens = split_tokens(text)
        finish: FinishReason = "stop"
        cut = min((i for i in (text.find(stop) for stop in request.stop or []) if i >= 0), default=-1)
        if cut >= 0:  # a stop sequence ends the answer, not included
            text = text[:cut]
            tokens = split_tokens(text)
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, finish = tokens[: request.max_tokens], "length"
            text = " ".join(tokens)
        return ChatResult(
            message=AssistantMessage(content=text),
            finish_reason=finish,
            model=model,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=len(tokens)),
        )

    async def run_streaming(self, model: str, request: ChatInput, on_delta: OnDelta) -> ChatResult:
        """The same answer, handed over word by word (each word a turn of the event loop)."""
        result = await self.run(model, request)
        message = result.message
        for word in re.findall(r"\S+\s*", message.content or ""):
            on_delta(ChatDelta(content=word))
            await asyncio.sleep(0)
        for index, call in enumerate(message.tool_calls or []):
            fragment = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": call.function.model_dump(),
            }
            on_delta(ChatDelta(tool_calls=[fragment]))
        return result

    def _tool_call(self, model: str, request: ChatInput, last_user: str, prompt_tokens: int) -> ChatResult:
        assert request.tools
        choice = request.tool_choice
        name = choice.function.get("name", "") if not isinstance(choice, str) and choice else ""
        tool = next((t for t in request.tools if t.function.name == name), request.tools[0])
        arguments = orjson.dumps({"query": last_user.strip()[:400]}).decode()
        call_id = "call_" + hashlib.blake2b(arguments.encode(), digest_size=8).hexdigest()
        call = ToolCall(id=call_id, function=FunctionCall(name=tool.function.name, arguments=arguments))
        return ChatResult(
            message=AssistantMessage(content=None, tool_calls=[call]),
            finish_reason="tool_calls",
            model=model,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=count_tokens(arguments)),
        )


def embed_text(text: str, dimensions: int) -> list[float]:
    """A unit vector from hashed words and character trigrams (the hashing trick, signed)."""
    vector = [0.0] * dimensions
    lowered = text.lower()
    features = split_tokens(lowered)
    padded = f"  {lowered}  "
    features += [padded[i : i + 3] for i in range(len(padded) - 2)]
    for feature in features:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        vector[h % dimensions] += 1.0 if (h >> 63) else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class SimEmbed(_Sim):
    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        await self._simulate(model, request)
        dimensions = request.dimensions or DEFAULT_DIMENSIONS
        texts = request.texts()
        return EmbedResult(
            embeddings=[embed_text(t, dimensions) for t in texts],
            model=model,
            usage=Usage(input_tokens=sum(count_tokens(t) for t in texts)),
        )


_SUFFIXES = ("ing", "ed", "es", "s")


def _terms(text: str) -> list[str]:
    """Lowercased words with the commonest English suffixes cut, so 'refunds' matches 'refund'."""
    terms = []
    for word in _WORD.findall(text.lower()):
        for suffix in _SUFFIXES:
            if len(word) > len(suffix) + 2 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        terms.append(word)
    return terms


def bm25_scores(query: str, documents: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 score of each document for ``query``."""
    docs = [Counter(_terms(d)) for d in documents]
    lengths = [sum(d.values()) for d in docs]
    avg_len = (sum(lengths) / len(docs)) or 1.0
    terms = set(_terms(query))
    idf = {}
    for term in terms:
        df = sum(1 for d in docs if term in d)
        idf[term] = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        score = 0.0
        for term in terms:
            tf = doc.get(term, 0)
            if tf:
                score += idf[term] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))
        scores.append(score)
    return scores


class SimRerank(_Sim):
    async def run(self, model: str, request: RerankInput) -> RerankResult:
        await self._simulate(model, request)
        scores = bm25_scores(request.query, request.documents)
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        top = ranked[: request.top_n] if request.top_n else ranked
        return RerankResult(
            results=[RerankHit(index=i, relevance_score=round(scores[i] / (scores[i] + 1), 6)) for i in top],
            model=model,
            usage=Usage(input_tokens=count_tokens(request.query), units=1),
        )


_IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class SimImage(_Sim):
    async def run(self, model: str, request: ImageInput) -> MediaResult:
        await self._simulate(model, request)
        width, height = request.dimensions()
        items = []
        for i in range(request.n):
            data = await asyncio.to_thread(
                sim_media.render_image, f"{request.prompt}#{i}", width, height, request.output_format
            )
            fmt = request.output_format
            items.append(Media(data, _IMAGE_TYPES[fmt], fmt, width=width, height=height))
        return MediaResult(items=items, model=model, usage=Usage(units=request.n))


class SimSpeech(_Sim):
    async def run(self, model: str, request: SpeechInput) -> MediaResult:
        await self._simulate(model, request)
        if request.format not in ("wav", "pcm"):
            raise ProviderRejected(
                f"the simulator produces wav or pcm audio, not {request.format}",
                provider=self.context.name,
                model=model,
            )
        render = sim_media.render_wav if request.format == "wav" else sim_media.render_pcm
        data = await asyncio.to_thread(render, request.text, request.speed)
        seconds = sim_media.speech_seconds(request.text, request.speed)
        content_type = "audio/wav" if request.format == "wav" else "audio/pcm"
        media = Media(data, content_type, request.format, duration_s=seconds)
        return MediaResult(items=[media], model=model, usage=Usage(units=seconds))


class SimVideo(_Sim):
    async def run(self, model: str, request: VideoInput) -> MediaResult:
        await self._simulate(model, request)
        width, height = sim_media.gif_size(*request.dimensions())
        data = await asyncio.to_thread(
            sim_media.render_gif, request.prompt, width, height, request.duration_s
        )
        media = Media(data, "image/gif", "gif", width=width, height=height, duration_s=request.duration_s)
        return MediaResult(items=[media], model=model, usage=Usage(units=request.duration_s))
