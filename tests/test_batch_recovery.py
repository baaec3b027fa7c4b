"""Large batches end to end: every line exactly once, beside interactive traffic and across a killed worker.

The batch lane has its own worker process here (as an operator would run it) and a 3 s job timeout, so
a killed worker's claimed jobs come due again within seconds rather than minutes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI

from tests.conftest import ROOT, TEST_ROUTING, Service, own_db, run_service
from tests.helpers import chat, run
from tests.test_batches_api import jsonl, parsed, settled
from tests.test_media_jobs import restart

BATCH_LANE = "[lanes.batch]\nmax_jobs = 100\npoll_delay_s = 0.01\njob_timeout_s = 60\n"


@pytest.fixture(scope="module")
def service(redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A batch-lane worker (``processes[1]``) and an interactive-lane worker (``processes[2]``)."""
    text = TEST_ROUTING.read_text()
    assert BATCH_LANE in text
    text = text.replace(BATCH_LANE, BATCH_LANE.replace("job_timeout_s = 60", "job_timeout_s = 3"))
    workdir = tmp_path_factory.mktemp("recovery")
    env = {"AIJOBS_BATCH_WINDOW": "200"}
    with run_service(own_db(redis_url, 6), s3_endpoint, "aijobs-test", text, workdir, env, "batch") as svc:
        command = [sys.executable, "-m", "aijobs", "worker", "--lanes", "interactive"]
        with (workdir / "interactive.log").open("ab") as log:
            svc.processes.append(
                subprocess.Popen(command, env=svc.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
        yield svc


@pytest.fixture
async def sdk(service: Service) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0) as client:
        yield client


def each_once(lines: list[dict[str, Any]], count: int) -> None:
    seen = Counter(line["custom_id"] for line in lines)
    assert not [custom_id for custom_id, n in seen.items() if n > 1], "a line was answered twice"
    assert set(seen) == {f"q{i}" for i in range(count)}, "a line was lost"


async def interactive(service: Service, count: int) -> list[str]:
    """Run ``count`` interactive chat jobs four at a time while whatever else runs; their statuses."""
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as api:
        statuses: list[str] = []
        for first in range(0, count, 4):
            jobs = [run(api, chat(f"interactive {i}")) for i in range(first, first + 4)]
            statuses += [job["status"] for job in await asyncio.gather(*jobs)]
        return statuses


async def test_ten_thousand_lines_run_once_each_beside_interactive_jobs(
    sdk: AsyncOpenAI, service: Service
) -> None:
    uploaded = await sdk.files.create(file=("big.jsonl", jsonl(10_000)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert set(await interactive(service, 40)) == {"succeeded"}  # served while the batch runs
    running = await sdk.batches.retrieve(batch.id)
    assert running.status == "in_progress"  # the batch did not finish first: the two shared the time
    done = await settled(sdk, batch.id, timeout_s=240)
    counts = done.request_counts
    assert done.status == "completed" and counts is not None
    assert (counts.total, counts.completed, counts.failed) == (10_000, 10_000, 0)
    assert done.error_file_id is None
    each_once(parsed((await sdk.files.content(done.output_file_id)).content), 10_000)


async def test_a_worker_killed_mid_batch_loses_no_line(
    sdk: AsyncOpenAI, service: Service, tmp_path: Path
) -> None:
    uploaded = await sdk.files.create(file=("kill.jsonl", jsonl(3_000)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(600):
        progress = (await sdk.batches.retrieve(batch.id)).request_counts
        if progress is not None and progress.completed >= 300:
            break
        await asyncio.sleep(0.05)
    worker = service.processes[1]
    worker.send_signal(signal.SIGKILL)  # no graceful shutdown: claimed ticks and lines are left behind
    worker.wait(timeout=10)
    mid = await sdk.batches.retrieve(batch.id)
    assert mid.status == "in_progress" and mid.request_counts is not None
    assert mid.request_counts.completed < 3_000  # killed mid-batch, not after it
    service.processes[1] = restart(service, worker, tmp_path / "worker.log")
    done = await settled(sdk, batch.id, timeout_s=120)
    counts = done.request_counts
    assert done.status == "completed" and counts is not None
    assert (counts.total, counts.completed, counts.failed) == (3_000, 3_000, 0)
    each_once(parsed((await sdk.files.content(done.output_file_id)).content), 3_000)
