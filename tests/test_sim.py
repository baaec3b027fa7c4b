"""The simulator does real work of each kind, deterministically."""

from __future__ import annotations

import io
import math
import wave

import httpx2
import pytest
from PIL import Image

from aijobs.errors import ProviderRejected, ProviderUnavailable
from aijobs.providers import sim, sim_media
from aijobs.providers.base import MediaResult, ProviderContext
from aijobs.routing.config import ProviderConfig
from aijobs.tokens import count_tokens
from aijobs.types.chat import ChatInput
from aijobs.types.common import Media, RemoteFile
from aijobs.types.embed import EmbedInput
from aijobs.types.image import ImageInput
from aijobs.types.rerank import RerankInput
from aijobs.types.speech import SpeechInput
from aijobs.types.video import VideoInput


@pytest.fixture
async def context() -> ProviderContext:
    options = {"flaky": sim.SimOptions(failure_rate=0.5), "slow": sim.SimOptions(latency_ms=50)}
    return ProviderContext("sim", ProviderConfig(kind="sim"), None, httpx2.AsyncClient(), options)


def chat_input(text: str, **extra: object) -> ChatInput:
    return ChatInput.model_validate({"messages": [{"role": "user", "content": text}], **extra})


async def test_chat_reply_json_mode_and_token_counts(context: ProviderContext) -> None:
    result = await sim.SimChat(context).run("m", chat_input("Hello, world!"))
    assert result.message.content == "Simulated reply to: Hello, world!"
    assert result.usage.input_tokens == 4
    assert result.usage.output_tokens == count_tokens(result.message.content)
    as_json = await sim.SimChat(context).run("m", chat_input("hi", response_format={"type": "json_object"}))
    assert as_json.message.content == '{"reply":"Simulated reply to: hi"}'


async def test_named_tool_choice_calls_that_tool(context: ProviderContext) -> None:
    tools = [{"function": {"name": "a"}}, {"function": {"name": "b"}}]
    request = chat_input("x", tools=tools, tool_choice={"type": "function", "function": {"name": "b"}})
    result = await sim.SimChat(context).run("m", request)
    assert result.finish_reason == "tool_calls"
    assert result.message.tool_calls and result.message.tool_calls[0].function.name == "b"


async def test_failures_are_deterministic_in_model_and_input(context: ProviderContext) -> None:
    outcomes = []
    for i in range(40):
        try:
            await sim.SimChat(context).run("flaky", chat_input(f"q{i}"))
            outcomes.append(True)
        except ProviderUnavailable:
            outcomes.append(False)
    assert 8 < outcomes.count(False) < 32  # about half, at a 0.5 rate
    for i, ok in enumerate(outcomes[:10]):
        try:
            await sim.SimChat(context).run("flaky", chat_input(f"q{i}"))
            assert ok
        except ProviderUnavailable:
            assert not ok


async def test_latency_is_applied(context: ProviderContext) -> None:
    import time

    started = time.perf_counter()
    await sim.SimChat(context).run("slow", chat_input("x"))
    assert time.perf_counter() - started >= 0.05


def test_bm25_matches_word_forms() -> None:
    scores = sim.bm25_scores("refund time", ["Refunds take 14 days.", "Our dog is Biscuit."])
    assert scores[0] > 0 == scores[1]


def test_bm25_ranks_by_relevance() -> None:
    docs = ["apples and oranges", "the refund policy: refunds take 14 days", "refund", "nothing here"]
    scores = sim.bm25_scores("refund policy", docs)
    assert scores[1] > scores[2] > scores[0] == scores[3] == 0


async def test_rerank_and_embed(context: ProviderContext) -> None:
    ranked = await sim.SimRerank(context).run(
        "m", RerankInput(query="dog", documents=["cat", "dog", "a dog"])
    )
    assert ranked.results[0].index in (1, 2)
    assert all(0 <= hit.relevance_score < 1 for hit in ranked.results)
    vectors = (
        await sim.SimEmbed(context).run("m", EmbedInput(input=["abc", "abc"], dimensions=32))
    ).embeddings
    assert vectors[0] == vectors[1] and len(vectors[0]) == 32
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0)


def media_bytes(item: Media | RemoteFile) -> bytes:
    assert isinstance(item, Media)  # the simulator hands over bytes, never a URL
    return item.data


async def test_media_files_are_valid(context: ProviderContext) -> None:
    image = await sim.SimImage(context).run("m", ImageInput(prompt="p", size="100x64", output_format="jpeg"))
    assert isinstance(image, MediaResult)
    assert Image.open(io.BytesIO(media_bytes(image.items[0]))).size == (100, 64)
    assert image.items[0].content_type == "image/jpeg"
    speech = await sim.SimSpeech(context).run("m", SpeechInput(text="one two three four", speed=0.5))
    with wave.open(io.BytesIO(media_bytes(speech.items[0]))) as audio:
        assert math.isclose(
            audio.getnframes() / audio.getframerate(), 4 * sim_media.WORD_S / 0.5, rel_tol=0.01
        )
    video = await sim.SimVideo(context).run("m", VideoInput(prompt="p", duration_s=1, resolution="1080p"))
    clip = Image.open(io.BytesIO(media_bytes(video.items[0])))
    assert getattr(clip, "n_frames", 1) == 8
    assert clip.size == (320, 180)


async def test_speech_formats_the_simulator_cannot_make_are_rejected(context: ProviderContext) -> None:
    with pytest.raises(ProviderRejected, match="wav or pcm"):
        await sim.SimSpeech(context).run("m", SpeechInput(text="hi", format="mp3"))
