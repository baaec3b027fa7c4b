"""(h) A chat batch of N lines through the OpenAI Batch API, run by one worker on the batch lane against
the zero-latency OpenAI-wire fake: lines per second, and the worker's peak memory at two sizes (it
must not grow with the batch)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
import orjson


def batch_file(lines: int) -> bytes:
    body = {"model": "background", "messages": [{"role": "user", "content": "Classify this ticket."}]}
    return b"".join(
        orjson.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        + b"\n"
        for i in range(lines)
    )


async def run(api_url: str, key: str, lines: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=api_url, headers=headers, timeout=120) as api:
        upload = await api.post(
            "/v1/files", data={"purpose": "batch"}, files={"file": ("b.jsonl", batch_file(lines))}
        )
        upload.raise_for_status()
        started = time.perf_counter()
        created = await api.post(
            "/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
        )
        created.raise_for_status()
        batch = created.json()
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(0.2)
            batch = (await api.get(f"/v1/batches/{batch['id']}")).json()
        elapsed_s = time.perf_counter() - started
        output = (await api.get(f"/v1/files/{batch['output_file_id']}/content")).content
    ids = [orjson.loads(line)["custom_id"] for line in output.splitlines()]
    assert batch["status"] == "completed", batch
    assert sorted(ids) == sorted(f"t{i}" for i in range(lines)), "a line was lost or duplicated"
    assert batch["request_counts"] == {"total": lines, "completed": lines, "failed": 0}, batch
    return {
        "lines": lines, "seconds": round(elapsed_s, 2), "lines_per_s": round(lines / elapsed_s, 1),
        "counts": batch["request_counts"],
    }  # fmt: skip
