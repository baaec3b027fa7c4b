"""When Redis goes away under a running API, callers get a retryable 503, never a 500."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from aijobs.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import ROOT, SECRET, TEST_ROUTING, wait_ready


@pytest.fixture
def api_then_redis_dies(tmp_path: Path) -> Iterator[str]:
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin", "REDIS_URL": redis.url, "AIJOBS_PORT": str(port),
        "AIJOBS_ROUTING_FILE": str(TEST_ROUTING), "AIJOBS_SIGNING_SECRET": SECRET,
        "AIJOBS_BLOB_DIR": str(tmp_path / "blobs"), "AIJOBS_KEY_CACHE_TTL_S": "0",
    }  # fmt: skip
    with (tmp_path / "api.log").open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "aijobs", "api"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", [api])
            redis.stop()
            yield f"http://127.0.0.1:{port}"
        finally:
            api.terminate()
            api.wait(timeout=30)
            redis.stop()


def test_requests_during_a_redis_outage_are_503_with_retry_after(api_then_redis_dies: str) -> None:
    headers = {"Authorization": "Bearer aj_anything"}
    body = {"type": "chat", "input": {"messages": [{"role": "user", "content": "hi"}]}}
    for method, path in (("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/readyz")):
        response = httpx2.request(method, api_then_redis_dies + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 503, (path, response.text)
        if path != "/readyz":
            assert response.json()["error"]["code"] == "gateway_storage"
            assert response.headers["retry-after"] == "1"
