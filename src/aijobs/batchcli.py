"""``aijobs batch``: submit a JSONL file as a batch, follow it, fetch its results (over the HTTP API).

::

    aijobs batch submit requests.jsonl --feature background --wait   # a progress bar on stderr
    aijobs batch status batch_...
    aijobs batch results batch_... -o out.jsonl [--errors errors.jsonl]

Exit codes: 0 done (or submitted, without ``--wait``), 1 the batch ended failed, expired or
cancelled, 2 bad arguments or a refused request (the API's message on stderr), 3 still running when
``--wait`` ran out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from aijobs.settings import Settings

ENDED = {"completed": 0, "failed": 1, "expired": 1, "cancelled": 1}
BAR_CELLS = 30


class Refused(Exception):
    """The API refused a request; the message is its error's."""


def add_commands(sub: Any) -> None:
    """Register ``batch submit|status|results`` on the top-level parser's subcommands."""
    batch = sub.add_parser("batch", help="batches of requests (OpenAI Batch API)")
    commands = batch.add_subparsers(dest="batch_command", required=True)
    submit = commands.add_parser("submit", help="upload a JSONL file and start a batch")
    submit.add_argument("file", type=Path)
    submit.add_argument("--feature", default=None, help="the feature lines run under (default background)")
    submit.add_argument("--window", default="24h", help="completion window, in hours (default 24h)")
    submit.add_argument("--wait", type=float, nargs="?", const=24 * 3600.0, default=0, metavar="S",
                        help="follow it to the end (at most S seconds) with a progress bar")  # fmt: skip
    submit.set_defaults(func=cmd_submit)
    status = commands.add_parser("status", help="print a batch")
    status.add_argument("id")
    status.set_defaults(func=cmd_status)
    results = commands.add_parser("results", help="download a batch's output (and error) file")
    results.add_argument("id")
    results.add_argument("-o", "--output", type=Path, required=True, help="where the output lines go")
    results.add_argument("--errors", type=Path, default=None, help="where the error lines go")
    results.set_defaults(func=cmd_results)
    for command in (submit, status, results):
        command.add_argument("--url", default=None, help="API URL (default AIJOBS_PUBLIC_URL)")
        command.add_argument("--key", default=None, help="API key (default AIJOBS_KEY)")


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    try:
        first = args.file.open("rb").readline()
        endpoint = json.loads(first)["url"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"aijobs: cannot read a request line from {args.file}: {exc}", file=sys.stderr)
        return 2
    return _calling(args, settings, lambda http: _submit(http, args, endpoint))


def _submit(http: httpx2.Client, args: argparse.Namespace, endpoint: str) -> int:
    with args.file.open("rb") as data:
        uploaded = _ok(
            http.post("/v1/files", data={"purpose": "batch"}, files={"file": (args.file.name, data)})
        )
    body: dict[str, Any] = {
        "input_file_id": uploaded["id"],
        "endpoint": endpoint,
        "completion_window": args.window,
    }
    if args.feature:
        body["feature"] = args.feature
    batch = _ok(http.post("/v1/batches", json=body))
    deadline = time.monotonic() + args.wait
    while args.wait and batch["status"] not in ENDED and time.monotonic() < deadline:
        _progress(batch)
        time.sleep(0.5)
        batch = _ok(http.get(f"/v1/batches/{batch['id']}"))
    if args.wait:
        _progress(batch)
        print(file=sys.stderr)
    print(json.dumps(batch, indent=2))
    return ENDED.get(batch["status"], 3) if args.wait else 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    def status(http: httpx2.Client) -> int:
        print(json.dumps(_ok(http.get(f"/v1/batches/{args.id}")), indent=2))
        return 0

    return _calling(args, settings, status)


def cmd_results(args: argparse.Namespace, settings: Settings) -> int:
    def results(http: httpx2.Client) -> int:
        batch = _ok(http.get(f"/v1/batches/{args.id}"))
        if batch["status"] not in ENDED:
            print(f"aijobs: batch {args.id} is still {batch['status']}", file=sys.stderr)
            return 3
        for file_id, path in ((batch["output_file_id"], args.output), (batch["error_file_id"], args.errors)):
            if path is not None:
                _download(http, file_id, path)
        counts = batch["request_counts"]
        print(
            f"{batch['status']}: {counts['completed']} completed, {counts['failed']} failed", file=sys.stderr
        )
        return ENDED[batch["status"]]

    return _calling(args, settings, results)


def _download(http: httpx2.Client, file_id: str | None, path: Path) -> None:
    """Stream the file to ``path`` (an empty file when the batch has none)."""
    with path.open("wb") as out:
        if file_id is None:
            return
        with http.stream("GET", f"/v1/files/{file_id}/content") as response:
            if response.status_code >= 400:
                response.read()
                _ok(response)
            for chunk in response.iter_bytes():
                out.write(chunk)


def _calling(args: argparse.Namespace, settings: Settings, work: Any) -> int:
    key = args.key or os.environ.get("AIJOBS_KEY", "")
    if not key:
        print("aijobs: pass --key or set AIJOBS_KEY", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx2.Client(base_url=args.url or settings.public_url, headers=headers, timeout=120) as http:
            return int(work(http))
    except Refused as exc:
        print(f"aijobs: {exc}", file=sys.stderr)
        return 2
    except httpx2.HTTPError as exc:
        print(f"aijobs: cannot reach the API: {exc}", file=sys.stderr)
        return 2


def _ok(response: httpx2.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = error["message"] + "".join(
                f"\n  line {d['line']}: {d['message']}" for d in error.get("details") or []
            )
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise Refused(f"{response.status_code}: {message}")
    return response.json()


def _progress(batch: dict[str, Any]) -> None:
    counts = batch["request_counts"]
    done, total = counts["completed"] + counts["failed"], max(counts["total"], 1)
    cells = BAR_CELLS * done // total
    bar = "#" * cells + "." * (BAR_CELLS - cells)
    line = f"\r[{bar}] {done}/{counts['total']} lines, {counts['failed']} failed ({batch['status']})"
    print(line, end="", file=sys.stderr, flush=True)
