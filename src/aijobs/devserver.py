"""The development supervisor behind ``aijobs run`` / ``make run``.

Starts an embedded Redis (unless ``REDIS_URL`` is set), then the API and one worker serving every
lane as child processes, creates a dev API key and prints how to submit a job. Ctrl-C (or SIGTERM)
stops the children gracefully, then Redis. Children are started with PR_SET_PDEATHSIG so they die
even if the supervisor is killed outright.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx2
from redis.asyncio import Redis

from aijobs.apikeys import ApiKeys
from aijobs.embedded_redis import EmbeddedRedis, die_with_parent
from aijobs.routing import load_policy
from aijobs.settings import Settings

#: ``make run`` lets input image URLs point at this machine, and says so in its banner.
DEV_OUTBOUND_ALLOW = "localhost,127.0.0.0/8,::1"


class DevServer:
    """Supervises Redis, the API and a worker for local development."""

    def __init__(self, settings: Settings, port: int | None, data_dir: Path) -> None:
        self.port = port or settings.port
        self.data_dir = data_dir.resolve()
        self.redis: EmbeddedRedis | None = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def _env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AIJOBS_ROUTING_FILE", "routing.dev.toml")
        env.setdefault("AIJOBS_BLOB_BACKEND", "local")
        env.setdefault("AIJOBS_BLOB_DIR", str(self.data_dir / "blobs"))
        env.setdefault("AIJOBS_SIGNING_SECRET", self._dev_secret())
        env["REDIS_URL"] = redis_url
        env.setdefault("AIJOBS_LOG_FORMAT", "text")  # a terminal, not a log pipeline
        # Local development fetches input images from this machine; production allows none by default.
        env.setdefault("AIJOBS_OUTBOUND_ALLOW", DEV_OUTBOUND_ALLOW)
        env["AIJOBS_PORT"] = str(self.port)
        return env

    def _dev_secret(self) -> str:
        """A signing secret kept in the data dir, so blob links survive a restart of ``make run``."""
        path = self.data_dir / "dev-signing-secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def run(self) -> int:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            self.redis = EmbeddedRedis(self.data_dir / "redis").start()
            redis_url = self.redis.url
        env = self._env(redis_url)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            load_policy(Path(env["AIJOBS_ROUTING_FILE"]), env)  # fail here, clearly, not in a child
            key = asyncio.run(self._dev_key(redis_url))
            python = sys.executable
            self.children.append(self._spawn([python, "-m", "aijobs", "api"], env))
            self.children.append(
                self._spawn(
                    [python, "-m", "aijobs", "worker", "--lanes", "interactive,media,batch,webhooks"], env
                )
            )
            if not self._wait_ready():
                return self._shutdown(1)
            self._banner(key, redis_url, env["AIJOBS_ROUTING_FILE"])
            while not self.stopping:
                if any(child.poll() is not None for child in self.children):
                    print("aijobs run: a child process exited; stopping", file=sys.stderr)
                    return self._shutdown(1)
                time.sleep(0.2)
            return self._shutdown(0)
        except BaseException:
            self._shutdown(1)
            raise

    async def _dev_key(self, redis_url: str) -> str:
        redis = Redis.from_url(redis_url)
        try:
            return await ApiKeys(redis).create("dev", "make run")
        finally:
            await redis.aclose()

    def _spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, env=env, preexec_fn=die_with_parent)  # noqa: S603 (our own argv)

    def _wait_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if any(child.poll() is not None for child in self.children):
                return False
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200:
                    return True
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        print(f"aijobs run: the API did not become ready on port {self.port}", file=sys.stderr)
        return False

    def _banner(self, key: str, redis_url: str, routing_file: str) -> None:
        base = f"http://127.0.0.1:{self.port}"
        body = '{"type": "chat", "input": {"messages": [{"role": "user", "content": "Hello!"}]}}'
        print(
            f"""
aijobs is running (simulator provider: {routing_file}; Redis: {redis_url})
  API      {base}
  docs     {base}/docs
  dev key  {key}
  outbound image URLs and webhooks may point at this machine
           (AIJOBS_OUTBOUND_ALLOW={DEV_OUTBOUND_ALLOW}); production calls public addresses only

Submit a job, then fetch it by the id it returns:

  export AIJOBS_KEY={key}
  curl -s {base}/v1/jobs -H "Authorization: Bearer $AIJOBS_KEY" \\
       -H 'Content-Type: application/json' -d '{body}'
  curl -s {base}/v1/jobs/JOB_ID -H "Authorization: Bearer $AIJOBS_KEY"

or submit and wait for the result in one step:

  .venv/bin/aijobs submit chat '{{"messages": [{{"role": "user", "content": "Hello!"}}]}}' \\
       --wait 30 --url {base}

Ctrl-C stops everything.
""",
            flush=True,
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _shutdown(self, code: int) -> int:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        return code
