"""The thin entry points in workers/ run a lane with arq's stock runner, on the same queues and records."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import ROOT, Service
from tests.helpers import chat, submit, wait_for


@pytest.fixture
def stock_arq_batch_worker(service: Service, tmp_path: Path) -> Iterator[None]:
    """``arq workers.batch.WorkerSettings``: the test service itself runs no batch-lane worker."""
    arq = Path(sys.executable).with_name("arq")
    with (tmp_path / "arq.log").open("wb") as log:
        process = subprocess.Popen(
            [str(arq), "workers.batch.WorkerSettings"], cwd=ROOT, env=service.env, stdout=log, stderr=log
        )
        try:
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, (tmp_path / "arq.log").read_text()


@pytest.mark.usefixtures("stock_arq_batch_worker")
async def test_stock_arq_runs_a_lane_from_the_workers_entry_point(service: Service) -> None:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as client:
        job = await submit(client, chat("via stock arq", feature="background"))
        done = await wait_for(client, job["id"], timeout_s=30)
    assert done["status"] == "succeeded"
    assert done["output"]["message"]["content"] == "Simulated reply to: via stock arq"
