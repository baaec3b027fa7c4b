"""The ``aijobs`` command: ``run | api | worker | submit | keys | routing``.

``aijobs run`` is the development supervisor behind ``make run``: embedded Redis (unless
``REDIS_URL`` is set), the local blob store, the simulator routing, then the API and one worker as
child processes. Ctrl-C stops them all; children also die with the supervisor (PR_SET_PDEATHSIG), so
nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

from aijobs import batchcli, logs
from aijobs.errors import ConfigError
from aijobs.routing.config import WORKER_LANES, WorkerLane
from aijobs.settings import Settings
from aijobs.types import JOB_TYPES

log = logging.getLogger("aijobs")


def _configure_logging(level: str, fmt: str) -> None:
    logs.configure(level, fmt)
    # httpx2 logs every request URL at INFO, and some providers put keys in query strings; arq logs
    # every job, which costs throughput and duplicates our own records.
    for noisy in ("httpx2", "httpcore", "arq.worker", "arq.jobs"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is Linux/macOS only; asyncio's loop works everywhere
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from aijobs.api.app import create_app
    from aijobs.routing import load_policy

    env = dict(os.environ)
    routing = load_policy(settings.routing_file, env)
    for warning in routing.warnings:
        log.warning("%s", warning)
    app = create_app(settings, routing, env)
    uvicorn.run(
        app, host=args.host or settings.host, port=args.port or settings.port,
        loop="uvloop", http="httptools", proxy_headers=False,  # client addresses are never used
        log_level=settings.log_level.lower(), log_config=None, access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )  # fmt: skip
    return 0


def parse_lanes(text: str) -> list[WorkerLane]:
    lanes = [lane.strip() for lane in text.split(",") if lane.strip()]
    unknown = [lane for lane in lanes if lane not in WORKER_LANES]
    if unknown or not lanes:
        names = ", ".join(WORKER_LANES)
        raise ConfigError(f"--lanes: unknown lane(s) {unknown or text!r}; lanes are {names}")
    return [cast(WorkerLane, lane) for lane in dict.fromkeys(lanes)]


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from aijobs.routing import load_policy
    from aijobs.worker_process import serve

    lanes = parse_lanes(args.lanes)
    routing = load_policy(settings.routing_file, dict(os.environ))
    for warning in routing.warnings:
        log.warning("%s", warning)
    _use_uvloop()
    return 0 if asyncio.run(serve(settings, routing, lanes, dict(os.environ))) else 1


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from aijobs.apikeys import ApiKeys

    async def create() -> str:
        redis = Redis.from_url(settings.redis_url)
        try:
            return await ApiKeys(redis).create(args.tenant, args.name)
        finally:
            await redis.aclose()

    try:
        key = asyncio.run(create())
    except ValueError as exc:
        print(f"aijobs: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(f"# tenant {args.tenant}: store this key now; it cannot be shown again", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from aijobs.apikeys import ApiKeys

    async def revoke() -> bool:
        redis = Redis.from_url(settings.redis_url)
        try:
            return await ApiKeys(redis).revoke(args.key)
        finally:
            await redis.aclose()

    if not asyncio.run(revoke()):
        print("aijobs: no such key", file=sys.stderr)
        return 1
    print(f"revoked; API processes stop accepting it within {settings.key_cache_ttl_s:g} s", file=sys.stderr)
    return 0


def cmd_routing_check(args: argparse.Namespace, settings: Settings) -> int:
    from aijobs.routing import load_policy

    routing = load_policy(Path(args.file) if args.file else settings.routing_file, dict(os.environ))
    for warning in routing.warnings:
        print(f"warning: {warning}")
    for feature in routing.features.values():
        targets = " → ".join(str(t) for t in feature.targets)
        print(f"{feature.name:<16} {feature.type:<7} {feature.lane:<12} {targets}")
    return 0


def _read_input(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return json.loads(text)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Submit a job over HTTP; with --wait, poll it to the end (exit 0 succeeded, 1 failed, 3 timed out)."""
    import httpx2

    key = args.key or os.environ.get("AIJOBS_KEY", "")
    if not key:
        print("aijobs: pass --key or set AIJOBS_KEY", file=sys.stderr)
        return 2
    try:
        body: dict[str, Any] = {"type": args.type, "input": _read_input(args.input)}
    except (OSError, ValueError) as exc:
        print(f"aijobs: cannot read the input: {exc}", file=sys.stderr)
        return 2
    if args.feature:
        body["feature"] = args.feature
    headers = {"Authorization": f"Bearer {key}"}
    with httpx2.Client(base_url=args.url or settings.public_url, headers=headers, timeout=30) as http:
        response = http.post("/v1/jobs", json=body)
        if response.status_code >= 400:
            print(f"aijobs: {response.status_code}: {response.json()['error']['message']}", file=sys.stderr)
            return 2
        job = response.json()
        deadline = time.monotonic() + args.wait
        while args.wait and job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = http.get(f"/v1/jobs/{job['id']}").json()
    print(json.dumps(job, indent=2, ensure_ascii=False))
    if not args.wait:
        return 0
    return {"succeeded": 0, "failed": 1, "canceled": 1}.get(job["status"], 3)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from aijobs.devserver import DevServer

    return DevServer(settings, port=args.port, data_dir=Path(args.data_dir)).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aijobs", description="Async AI job processor.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start everything for development (embedded Redis, API, worker)")
    run.add_argument("--port", type=int, default=None, help="API port (default AIJOBS_PORT or 8000)")
    run.add_argument("--data-dir", default=".aijobs", help="where dev Redis data and blobs live")
    run.set_defaults(func=cmd_run)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.add_argument("--access-log", action="store_true")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run jobs from one or more lanes")
    worker.add_argument(
        "--lanes", default=",".join(WORKER_LANES), help="comma-separated: interactive,media,batch,webhooks"
    )
    worker.set_defaults(func=cmd_worker)

    submit = sub.add_parser("submit", help="submit a job to a running API and print it")
    submit.add_argument("type", choices=JOB_TYPES)
    submit.add_argument("input", help="the job's input as JSON, @FILE, or - for stdin")
    submit.add_argument("--feature", default=None)
    submit.add_argument(
        "--wait", type=float, default=0, metavar="S", help="wait up to S seconds for the result"
    )
    submit.add_argument("--url", default=None, help="API URL (default AIJOBS_PUBLIC_URL or http://HOST:PORT)")
    submit.add_argument("--key", default=None, help="API key (default AIJOBS_KEY)")
    submit.set_defaults(func=cmd_submit)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label for the key")
    create.set_defaults(func=cmd_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    revoke.set_defaults(func=cmd_keys_revoke)

    routing = sub.add_parser("routing", help="routing policy tools").add_subparsers(
        dest="routing_command", required=True
    )
    check = routing.add_parser("check", help="validate a routing file and print the resolved routes")
    check.add_argument("file", nargs="?", help="default: AIJOBS_ROUTING_FILE or routing.toml")
    check.set_defaults(func=cmd_routing_check)
    batchcli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        _configure_logging(settings.log_level, settings.log_format)
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"aijobs: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
