"""Processes for benchmarks: Redis, the API and a worker, each on loopback, plus measuring helpers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from aijobs.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
ROUTING = Path(__file__).with_name("routing.bench.toml")


@dataclass(frozen=True)
class Stack:
    redis_url: str
    api_url: str
    env: dict[str, str]
    data_dir: Path


@contextlib.contextmanager
def redis(data_dir: Path) -> Iterator[str]:
    with EmbeddedRedis(data_dir / "redis", appendonly=False) as server:
        yield server.url


def base_env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIJOBS_")}
    env.update(
        REDIS_URL=redis_url,
        AIJOBS_PORT=str(port),
        AIJOBS_ROUTING_FILE=str(ROUTING),
        AIJOBS_SIGNING_SECRET="bench-signing-secret-0123456789",  # noqa: S106 (a throwaway local secret)
        AIJOBS_BLOB_DIR=str(data_dir / "blobs"),
        AIJOBS_LOG_LEVEL="WARNING",
    )
    return env


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m aijobs ARGS``, or ``python -m bench.x ARGS`` when the first argument names one."""
    command = (
        [sys.executable, "-m", *args]
        if args[0].startswith("bench.")
        else [sys.executable, "-m", "aijobs", *args]
    )
    log = open(os.environ["BENCH_LOG"], "ab") if "BENCH_LOG" in os.environ else subprocess.DEVNULL  # noqa: SIM115
    env = dict(env)
    nice = int(env.pop("BENCH_NICE", "0"))
    lower = (lambda: os.nice(nice)) if nice else None
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, preexec_fn=lower)


@contextlib.contextmanager
def processes(*commands: tuple[list[str], dict[str, str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [spawn(args, env) for args, env in commands]
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def api(
    redis_url: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    port = free_port()
    env = base_env(redis_url, data_dir, port) | (extra_env or {})
    with processes((["api"], env)) as (process,):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield url, env, process


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the API exited at start")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the API did not become ready")


def wait_http(url: str, timeout_s: float = 30) -> None:
    """Wait until ``url`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
