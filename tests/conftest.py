"""Session fixtures: real Redis, moto's S3 server over HTTP, and the service as real processes.

Nothing reaches the internet: a guard makes any non-loopback connection from the test process fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from redis.asyncio import Redis

from aijobs.apikeys import ApiKeys
from aijobs.embedded_redis import EmbeddedRedis, free_port
from tests.s3server import moto_s3_server

ROOT = Path(__file__).resolve().parent.parent
TEST_ROUTING = Path(__file__).with_name("routing.test.toml")
SECRET = "test-signing-secret-0123456789"
_real_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0]) if isinstance(address, tuple) else ""
        if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
            raise ConnectionRefusedError(f"tests may not reach the network: {address!r}")
    _real_connect(sock, address)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def no_network() -> Iterator[None]:
    if os.environ.get("AIJOBS_LIVE") == "1":  # tests/live call real providers, on purpose
        yield
        return
    socket.socket.connect = _loopback_only  # type: ignore[method-assign,assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@dataclass(frozen=True)
class Service:
    """The API and a worker running as processes, and a key for each of two tenants."""

    url: str
    key: str
    other_key: str
    env: dict[str, str]
    #: The API process, then the worker.
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


#: Real provider kinds, pointed at llmock, added to the simulator routing for the service under test.
PROVIDERS_ON_LLMOCK = """
[providers.deepseek]
kind = "openai"
preset = "deepseek"
base_url = "{llmock}/v1"
api_key_env = "DEEPSEEK_API_KEY"

[providers.anthropic]
kind = "anthropic"
base_url = "{llmock}/anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[features.chinese]
type = "chat"
route = ["deepseek:deepseek-chat"]

[features.support-chat-claude]
type = "chat"
route = ["anthropic:claude-sonnet-4-5"]

[features.streamed-chat]
type = "chat"
route = ["deepseek:deepseek-chat", "anthropic:claude-sonnet-4-5"]
attempts = 1
timeout_s = 5
ttft_timeout_s = 0.5

# A second llmock serving 10% 429s and 10% 500s at random (the chaos test).
[providers.chaos-deepseek]
kind = "openai"
preset = "deepseek"
base_url = "{chaos}/v1"
api_key_env = "DEEPSEEK_API_KEY"

[providers.chaos-claude]
kind = "anthropic"
base_url = "{chaos}/anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[features.chaos-chat]
type = "chat"
route = ["chaos-deepseek:deepseek-chat", "chaos-claude:claude-sonnet-4-5"]
attempts = 3
backoff_base_s = 0.05
backoff_cap_s = 0.5
"""


def service_env(redis_url: str, s3_endpoint: str, port: int, bucket: str, routing: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "AIJOBS_PORT": str(port),
        "AIJOBS_ROUTING_FILE": str(routing),
        "DEEPSEEK_API_KEY": "sk-fake-deepseek-key-000000",
        "ANTHROPIC_API_KEY": "sk-ant-fake-key-0000000000",
        "AIJOBS_SIGNING_SECRET": SECRET,
        "AIJOBS_BLOB_BACKEND": "s3",
        "AIJOBS_S3_BUCKET": bucket,
        "AIJOBS_S3_ENDPOINT_URL": s3_endpoint,
        "AIJOBS_S3_ACCESS_KEY_ID": "testing",
        "AIJOBS_S3_SECRET_ACCESS_KEY": "testing",
        "AIJOBS_MAX_BODY_BYTES": str(256 * 1024),
        "AIJOBS_KEY_CACHE_TTL_S": "0",
    }


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"service at {url} not ready within {timeout_s} s")


@pytest.fixture(scope="session")
def service(
    redis_url: str,
    s3_endpoint: str,
    llmock_url: str,
    chaos_llmock_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    bucket = "aijobs-test"
    providers = PROVIDERS_ON_LLMOCK.format(llmock=llmock_url, chaos=chaos_llmock_url)
    routing_text = TEST_ROUTING.read_text() + providers
    with run_service(redis_url, s3_endpoint, bucket, routing_text, tmp_path_factory.mktemp("svc")) as svc:
        yield svc


@contextlib.contextmanager
def run_service(
    redis_url: str,
    s3_endpoint: str,
    bucket: str,
    routing_text: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    lanes: str = "interactive,media,webhooks",
) -> Iterator[Service]:
    """An API process and a worker (on ``lanes``) for ``routing_text``; logs in ``workdir``."""
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    s3.create_bucket(Bucket=bucket)  # idempotent in us-east-1
    port = free_port()
    routing = workdir / "routing.toml"
    routing.write_text(routing_text)
    env = {**service_env(redis_url, s3_endpoint, port, bucket, routing), **(extra_env or {})}
    with contextlib.ExitStack() as stack:
        processes = []
        for name, args in (("api", ["api"]), ("worker", ["worker", "--lanes", lanes])):
            log = stack.enter_context((workdir / f"{name}.log").open("ab"))
            command = [sys.executable, "-m", "aijobs", *args]
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            processes.append(process)
        try:
            wait_ready(f"http://127.0.0.1:{port}", processes)
            keys = asyncio.run(_make_keys(redis_url))
            yield Service(f"http://127.0.0.1:{port}", keys[0], keys[1], env, processes)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                process.wait(timeout=30)


def own_db(redis_url: str, db: int) -> str:
    """The same Redis, another database: the session's other service workers share the lane names."""
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


async def new_tenant(redis_url: str, name: str) -> str:
    """An API key for a fresh tenant (tests that register endpoints keep them to themselves)."""
    redis = Redis.from_url(redis_url)
    try:
        return await ApiKeys(redis).create(name)
    finally:
        await redis.aclose()


async def _make_keys(redis_url: str) -> tuple[str, str]:
    redis = Redis.from_url(redis_url)
    try:
        api_keys = ApiKeys(redis)
        return await api_keys.create("acme"), await api_keys.create("globex")
    finally:
        await redis.aclose()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def llmock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llmock (PyPI) on loopback: real provider wire formats with fault injection."""
    yield from _llmock(tmp_path_factory, {})


@pytest.fixture(scope="session")
def chaos_llmock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llmock answering 10% of requests with a 429 (Retry-After: 1) and 10% with a 500, at random."""
    yield from _llmock(tmp_path_factory, {"LLMOCK_ERROR_RATE_429": "0.1", "LLMOCK_ERROR_RATE_500": "0.1"})


def _llmock(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("llmock") / "llmock.log").open("wb")
    command = [
        str(Path(sys.executable).with_name("llmock")),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("llmock did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def fakes_url() -> Iterator[str]:
    """Faithful fakes (tests/fakes) for the provider APIs llmock does not speak."""
    from tests.fakes.server import fake_providers_server

    with fake_providers_server() as url:
        yield url


@pytest.fixture(scope="session")
def media_fakes_url() -> Iterator[str]:
    """Faithful fakes of the media providers (tests/fakes/media), over one render farm."""
    from tests.fakes.media.app import create_app
    from tests.fakes.server import fake_providers_server

    with fake_providers_server(create_app()) as url:
        yield url


@pytest.fixture
async def media_fakes(media_fakes_url: str) -> str:
    """The media fakes, reset (no tasks, faults or journal; default render time) for this test."""
    async with httpx2.AsyncClient() as http:
        (await http.post(f"{media_fakes_url}/_media/reset")).raise_for_status()
    return media_fakes_url
