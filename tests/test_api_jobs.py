"""End to end over real HTTP: API → Redis → worker → simulator → S3 (moto) → signed URLs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import wave

import httpx2
from PIL import Image

from tests.helpers import chat, run, submit


async def download(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    return response


async def test_chat_job_succeeds_with_reply_usage_and_route(client: httpx2.AsyncClient) -> None:
    job = await run(client, chat("What is the capital of France?"))
    assert job["status"] == "succeeded", job
    assert job["feature"] == "support-chat"
    message = job["output"]["message"]
    assert message["role"] == "assistant"
    assert "capital of France" in message["content"]
    assert job["output"]["finish_reason"] == "stop"
    assert job["usage"]["input_tokens"] == 7
    assert job["usage"]["output_tokens"] > 5
    assert job["route"] == {"provider": "sim", "model": "fast", "fallback_path": ["sim:fast"]}
    assert [a["outcome"] for a in job["attempts"]] == ["ok"]
    assert job["started_at"] <= job["finished_at"]


async def test_chat_tool_call_and_length_limit(client: httpx2.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    job = await run(client, chat("find order 42", tools=tools, tool_choice="required"))
    assert job["output"]["finish_reason"] == "tool_calls"
    assert job["output"]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    job = await run(client, chat("a long question " * 20, max_tokens=3))
    assert job["output"]["finish_reason"] == "length"
    assert job["usage"]["output_tokens"] == 3


async def test_embed_vectors_are_unit_norm_stable_and_meaningful(client: httpx2.AsyncClient) -> None:
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew by ten percent"]
    body = {"type": "embed", "input": {"input": texts, "dimensions": 128}}
    first, second = await run(client, body), await run(client, body)
    vectors = first["output"]["embeddings"]
    assert first["output"]["dimensions"] == 128
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 128
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert vectors == second["output"]["embeddings"]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


async def test_rerank_puts_the_relevant_document_first(client: httpx2.AsyncClient) -> None:
    documents = [
        "Paris is known for its cafes and museums.",
        "Refunds are issued within 14 days of a return request.",
        "Our office dog is named Biscuit.",
    ]
    body = {
        "type": "rerank",
        "input": {"query": "how long do refunds take", "documents": documents, "top_n": 2},
    }
    job = await run(client, body)
    results = job["output"]["results"]
    assert next(r["index"] for r in results) == 1
    assert len(results) == 2
    assert results[0]["relevance_score"] > results[1]["relevance_score"] >= 0


async def test_image_job_outputs_pngs_of_the_asked_size_in_s3(client: httpx2.AsyncClient) -> None:
    job = await run(client, {"type": "image", "input": {"prompt": "a red fox", "n": 2, "size": "320x200"}})
    assert job["status"] == "succeeded", job
    images = job["output"]["images"]
    assert len(images) == 2
    for blob in images:
        response = await download(blob["url"])
        assert "X-Amz-Signature" in blob["url"]  # an S3 presigned URL, not a provider's
        assert hashlib.sha256(response.content).hexdigest() == blob["sha256"]
        assert len(response.content) == blob["bytes"]
        picture = Image.open(io.BytesIO(response.content))
        assert (picture.format, picture.size) == ("PNG", (320, 200))
        assert (blob["width"], blob["height"], blob["content_type"]) == (320, 200, "image/png")
        assert blob["expires_at"] > job["finished_at"]
    assert images[0]["sha256"] != images[1]["sha256"]
    assert job["usage"]["units"] == 2


async def test_speech_job_outputs_a_wav_whose_length_follows_the_text(client: httpx2.AsyncClient) -> None:
    short = await run(client, {"type": "speech", "input": {"text": "Hello there."}})
    long = await run(client, {"type": "speech", "input": {"text": "Hello there. " * 10, "speed": 2.0}})
    durations = []
    for job in (short, long):
        blob = job["output"]["audio"]
        assert blob["content_type"] == "audio/wav"
        with wave.open(io.BytesIO((await download(blob["url"])).content)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        assert math.isclose(seconds, blob["duration_s"], abs_tol=0.01)
        durations.append(seconds)
    assert durations[1] > durations[0] * 4


async def test_video_job_outputs_an_animation_of_the_asked_duration(client: httpx2.AsyncClient) -> None:
    job = await run(
        client, {"type": "video", "input": {"prompt": "waves", "duration_s": 2, "aspect_ratio": "9:16"}}
    )
    blob = job["output"]["videos"][0]
    clip = Image.open(io.BytesIO((await download(blob["url"])).content))
    assert clip.format == "GIF"
    assert blob["content_type"] == "image/gif"
    assert getattr(clip, "n_frames", 1) == 16
    assert clip.size == (blob["width"], blob["height"])
    assert clip.size[0] < clip.size[1]
    assert blob["duration_s"] == 2


async def test_fallback_path_is_recorded(client: httpx2.AsyncClient) -> None:
    job = await run(client, chat("hi", feature="fallback-chat"))
    assert job["status"] == "succeeded"
    assert job["route"]["provider"] == "backup"
    assert job["route"]["fallback_path"] == ["sim:flaky", "backup:fast"]
    assert [(a["outcome"], a["error_code"]) for a in job["attempts"]] == [
        ("error", "provider_unavailable"),  # retried once: the error allows it
        ("error", "provider_unavailable"),
        ("ok", None),
    ]


async def test_failed_job_is_a_200_with_the_error_and_attempts(client: httpx2.AsyncClient) -> None:
    job = await run(client, chat("hi", feature="broken-chat"))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_unavailable"
    assert job["output"] is None
    assert len(job["attempts"]) == 2  # the feature's default: two attempts per target


async def test_cancel_a_queued_job_and_a_running_one(client: httpx2.AsyncClient) -> None:
    # The test service runs no batch-lane worker, so a background job stays queued.
    queued = await submit(client, chat("later", feature="background"))
    response = await client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    again = await client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "caller_conflict"

    running = await submit(client, chat("slow one", feature="slow-chat"))  # the simulator takes 2.5 s
    status = running["status"]
    for _ in range(200):
        status = (await client.get(f"/v1/jobs/{running['id']}")).json()["status"]
        if status == "running":
            break
        await asyncio.sleep(0.01)
    assert status == "running"
    response = await client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.json()["status"] == "canceled"
    await asyncio.sleep(3.0)  # the worker's result arrives meanwhile, and must be thrown away
    final = (await client.get(f"/v1/jobs/{running['id']}")).json()
    assert final["status"] == "canceled"
    assert final["output"] is None
    assert final["error"]["code"] == "gateway_canceled"


async def test_unknown_job_is_404(client: httpx2.AsyncClient) -> None:
    for job_id in ("job_01JZZZZZZZZZZZZZZZZZZZZZZZ", "nope", "../etc"):
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "caller_not_found"
