"""``make bench``: measure the hot paths on this machine; print a table, write bench/results/.

(a) ``POST /v1/jobs`` p50/p99 at fixed offered rates (API + Redis, no worker competing).
(b) end-to-end chat jobs/s: HTTP → API → Redis → one worker → simulator (zero latency) → succeeded.
(b0) the same with the worker's breakers, ledger and budgets taken out; (b)/(b0) is their cost.
(c) raw arq no-op jobs/s drained by one worker on the same Redis: the upstream we build on; (b)/(c).
(d) 5,000 in-flight simulator jobs of 1 s each on one worker: wall time and the worker's peak RSS.
(e) 1,000 video tasks of 20 s each at a fake provider, polled by one worker: wall time and peak RSS.
(f) interactive jobs/s on one worker (interactive + webhooks lanes) without webhooks, then with each
    job's ``job.succeeded`` sent to a receiver answering in 200 ms; delivery throughput and latency.
(g) ``/v1/chat/completions`` against a zero-latency OpenAI-wire fake: added latency one request at a
    time, completions/s at concurrency 32, and streaming time to first byte (see bench/chat_api.py).
(h) chat batches through the OpenAI Batch API on one batch-lane worker against the same fake: lines/s,
    and the worker's peak RSS for a small and a large batch (see bench/batch.py).
(i) interactive chat latency, idle and while a batch runs on its own batch-lane worker: the p99
    ratio (see bench/fairness.py).
(j) crash recovery: a SIGKILLed worker's job running again on the other worker, p50/p99 over 20
    kills with the shipped lane settings (see bench/recovery.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from aijobs.apikeys import ApiKeys
from aijobs.embedded_redis import free_port
from bench import arq_noop, batch, chat_api, fairness, harness, pipeline, recovery, submit, webhooks

RESULTS = Path(__file__).with_name("results")


async def dev_key(redis_url: str) -> str:
    redis = Redis.from_url(redis_url)
    try:
        return await ApiKeys(redis).create("bench")
    finally:
        await redis.aclose()


def measure_submit(
    redis_url: str, data_dir: Path, rates: list[float], duration_s: float
) -> list[dict[str, Any]]:
    key = asyncio.run(dev_key(redis_url))
    with harness.api(redis_url, data_dir) as (url, _, process):
        rows = [asyncio.run(submit.offered_rate(url, key, rate, duration_s)) for rate in rates]
        for row in rows:
            row["api_peak_rss_mb"] = round(harness.peak_rss_mb(process.pid), 1)
    return rows


def measure_end_to_end(redis_url: str, data_dir: Path, jobs: int, bare: bool = False) -> dict[str, Any]:
    key = asyncio.run(dev_key(redis_url))
    command = ["bench.bare_worker"] if bare else ["worker", "--lanes", "interactive"]
    with (
        harness.api(redis_url, data_dir) as (url, env, _),
        harness.processes((command, env)) as (worker,),
    ):
        time.sleep(1.0)  # the worker connects and starts polling
        result = asyncio.run(pipeline.end_to_end(url, key, redis_url, jobs))
        result["worker_peak_rss_mb"] = round(harness.peak_rss_mb(worker.pid), 1)
    return result


def measure_arq(redis_url: str, jobs: int) -> dict[str, Any]:
    queue = f"bench:noop:{time.time_ns()}"
    asyncio.run(arq_noop.enqueue(redis_url, queue, jobs))
    command = [sys.executable, "-m", "bench.arq_noop", redis_url, queue]
    output = subprocess.run(command, cwd=harness.ROOT, capture_output=True, text=True, check=True)
    elapsed_s = float(output.stdout.strip().splitlines()[-1])
    return {"jobs": jobs, "drain_s": round(elapsed_s, 3), "jobs_per_s": round(jobs / elapsed_s, 1)}


def measure_in_flight(redis_url: str, data_dir: Path, jobs: int) -> dict[str, Any]:
    env = harness.base_env(redis_url, data_dir, free_port())
    with harness.processes((["worker", "--lanes", "interactive"], env)) as (worker,):
        time.sleep(1.0)
        result = asyncio.run(pipeline.in_flight(redis_url, jobs))
        result["worker_peak_rss_mb"] = round(harness.peak_rss_mb(worker.pid), 1)
    return result


def measure_media(redis_url: str, data_dir: Path, jobs: int, render_s: float = 20.0) -> dict[str, Any]:
    """``jobs`` video tasks at once, each rendering ``render_s`` at the Kling fake, on one worker."""
    fake_port = free_port()
    routing = data_dir / "routing.media.toml"
    fakes = f"http://127.0.0.1:{fake_port}"
    routing.write_text(
        harness.ROOT.joinpath("bench/routing.media.toml").read_text().replace("{fakes}", fakes)
    )
    env = {**harness.base_env(redis_url, data_dir, free_port()), "AIJOBS_ROUTING_FILE": str(routing)}
    env["KLING_API_KEY"] = "test-access|test-secret"  # the fake's pair
    body = {"prompt": "a fox crossing a snowfield", "duration_s": 5}
    with harness.processes((["bench.media_fake", str(fake_port), str(render_s)], env)):
        harness.wait_http(f"{fakes}/_media/tasks")
        with harness.processes((["worker", "--lanes", "media"], env)) as (worker,):
            time.sleep(1.0)
            result = asyncio.run(
                pipeline.in_flight(
                    redis_url, jobs, "video", type="video", lane="media", body=body, timeout_s=180
                )
            )
            result["worker_peak_rss_mb"] = round(harness.peak_rss_mb(worker.pid), 1)
    result["render_s"] = render_s
    return result


def measure_webhooks(redis_url: str, data_dir: Path, jobs: int, delay_s: float = 0.2) -> dict[str, Any]:
    """(b) with the webhooks lane served too: plain jobs, then as many jobs each with a webhook."""
    key = asyncio.run(dev_key(redis_url))
    receiver_port = free_port()
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    allow = {"AIJOBS_OUTBOUND_ALLOW": "127.0.0.1/32"}
    with (
        harness.processes((["bench.webhook_receiver", str(receiver_port), str(delay_s)], {})),
        harness.api(redis_url, data_dir, allow) as (url, env, _),
        harness.processes((["worker", "--lanes", "interactive,webhooks"], env)) as (worker,),
    ):
        harness.wait_http(f"{receiver_url}/_stats")
        time.sleep(1.0)
        asyncio.run(webhooks.create_job_secret(url, key))
        plain = asyncio.run(pipeline.end_to_end(url, key, redis_url, jobs))
        raw = webhooks.hooked_request(url, key, receiver_url)
        hooked = asyncio.run(pipeline.end_to_end(url, key, redis_url, jobs, raw=raw))
        delivered = asyncio.run(webhooks.deliveries(receiver_url, jobs, timeout_s=300))
        rss_mb = round(harness.peak_rss_mb(worker.pid), 1)
    return {
        "jobs": jobs,
        "receiver_delay_s": delay_s,
        "plain": plain,
        "with_webhooks": hooked,
        "throughput_ratio": round(hooked["jobs_per_s"] / plain["jobs_per_s"], 3),
        "deliveries": delivered,
        "worker_peak_rss_mb": rss_mb,
    }


OPENAI_ROUTING = """
[providers.fake]
kind = "openai"
base_url = "{upstream}/v1"
api_key_env = "FAKE_UPSTREAM_KEY"

[providers.fake.prices.gpt-4o-mini]
input_per_mtok = 0.15
output_per_mtok = 0.6

[features.bench-chat]
type = "chat"
route = ["fake:gpt-4o-mini"]
"""


def measure_openai(redis_url: str, data_dir: Path, requests: int) -> dict[str, Any]:
    """(g): the API process routing OpenAI calls to the fake upstream (in its own process)."""
    key = asyncio.run(dev_key(redis_url))
    upstream = f"http://127.0.0.1:{free_port()}"
    routing = data_dir / "routing.openai.toml"
    text = harness.ROOT.joinpath("bench/routing.bench.toml").read_text()
    routing.write_text(text + OPENAI_ROUTING.replace("{upstream}", upstream))
    env = {"AIJOBS_ROUTING_FILE": str(routing), "FAKE_UPSTREAM_KEY": "sk-bench-000000000000"}
    floor_port = free_port()
    floor = f"http://127.0.0.1:{floor_port}"
    with (
        harness.processes(
            (["bench.openai_fake", upstream.rsplit(":", 1)[1]], {}),
            (["bench.chat_floor", str(floor_port), upstream, redis_url], {}),
        ),
        harness.api(redis_url, data_dir, env) as (url, _, process),
    ):
        harness.wait_http(upstream)
        harness.wait_http(floor)
        result = chat_api.run(url, upstream, floor, key, requests)
        result["api_peak_rss_mb"] = round(harness.peak_rss_mb(process.pid), 1)
    return result


BATCH_ROUTING = (
    OPENAI_ROUTING
    + """
[lanes.batch]
max_jobs = 500
poll_delay_s = 0.05

[features.background]
type = "chat"
lane = "batch"
route = ["{batch_provider}:gpt-4o-mini"]
"""
)
#: (i): the batch's own upstream, as a batch feature's cheap provider is in production.
BATCH_UPSTREAM = """
[providers.fake_batch]
kind = "openai"
base_url = "{batch_upstream}/v1"
api_key_env = "FAKE_UPSTREAM_KEY"
"""


def _batch_setup(
    redis_url: str, data_dir: Path, batch_upstream: str | None = None
) -> tuple[str, str, dict[str, str]]:
    """A key, the fake upstream's URL and the service's environment for the batch phases; with
    ``batch_upstream``, batches go there instead."""
    key = asyncio.run(dev_key(redis_url))
    upstream = f"http://127.0.0.1:{free_port()}"
    routing = data_dir / "routing.batch.toml"
    text = harness.ROOT.joinpath("bench/routing.bench.toml").read_text() + BATCH_ROUTING
    if batch_upstream:
        text += BATCH_UPSTREAM.replace("{batch_upstream}", batch_upstream)
    text = text.replace("{batch_provider}", "fake_batch" if batch_upstream else "fake")
    routing.write_text(text.replace("{upstream}", upstream))
    env = {
        "AIJOBS_ROUTING_FILE": str(routing), "FAKE_UPSTREAM_KEY": "sk-bench-000000000000",
        "AIJOBS_MAX_UPLOAD_BYTES": str(200 * 1024 * 1024),
    }  # fmt: skip
    return key, upstream, env


def measure_batch(redis_url: str, data_dir: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """(h): each size on a fresh worker, so each peak RSS is that batch's own."""
    key, upstream, env = _batch_setup(redis_url, data_dir)
    results = []
    with (
        harness.processes((["bench.openai_fake", upstream.rsplit(":", 1)[1]], {})),
        harness.api(redis_url, data_dir, env) as (url, api_env, _),
    ):
        harness.wait_http(upstream)
        for lines in sizes:
            with harness.processes((["worker", "--lanes", "batch"], api_env)) as (worker,):
                time.sleep(1.0)
                result = asyncio.run(batch.run(url, key, lines))
                result["worker_peak_rss_mb"] = round(harness.peak_rss_mb(worker.pid), 1)
            results.append(result)
    return results


def measure_fairness(redis_url: str, data_dir: Path, lines: int, probes: int) -> dict[str, Any]:
    """(i): an interactive-lane worker and a batch-lane worker, as an operator would run them. The batch
    calls its own upstream: a provider's CPU is not on our host, so its fake runs at the lowest CPU
    priority, where it takes only what interactive work leaves."""
    batch_port = free_port()
    key, upstream, env = _batch_setup(redis_url, data_dir, f"http://127.0.0.1:{batch_port}")
    with (
        harness.processes(
            (["bench.openai_fake", upstream.rsplit(":", 1)[1]], {}),
            (["bench.openai_fake", str(batch_port)], {"BENCH_NICE": "19"}),
        ),
        harness.api(redis_url, data_dir, env) as (url, api_env, _),
        harness.processes(
            (["worker", "--lanes", "interactive"], api_env), (["worker", "--lanes", "batch"], api_env)
        ),
    ):
        harness.wait_http(upstream)
        time.sleep(1.0)
        return fairness.run(url, key, lines, probes)


def measure_recovery(redis_url: str, data_dir: Path, kills: int) -> dict[str, Any]:
    """(j): the API and two interactive-lane workers; each round kills the worker holding a job."""
    key = asyncio.run(dev_key(redis_url))
    with harness.api(redis_url, data_dir) as (url, env, _):
        return asyncio.run(recovery.run(url, key, redis_url, env, kills))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--only", default="", help="comma-separated phases to run (default: all)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    results: dict[str, Any] = {"machine": machine()}
    phases: dict[str, Callable[[str, Path], Any]] = {
        "submit": lambda url, d: measure_submit(url, d, [100, 200, 500, 1000, 2000], 4 * scale),
        "end_to_end": lambda url, d: measure_end_to_end(url, d, int(4000 * scale)),
        "end_to_end_bare": lambda url, d: measure_end_to_end(url, d, int(4000 * scale), bare=True),
        "arq_noop": lambda url, d: measure_arq(url, int(4000 * scale)),
        "in_flight": lambda url, d: measure_in_flight(url, d, int(5000 * scale)),
        "media": lambda url, d: measure_media(url, d, int(1000 * scale), 20.0 * scale),
        "webhooks": lambda url, d: measure_webhooks(url, d, int(2000 * scale)),
        "openai": lambda url, d: measure_openai(url, d, int(5000 * scale)),
        "batch": lambda url, d: measure_batch(url, d, [int(10_000 * scale), int(100_000 * scale)]),
        "fairness": lambda url, d: measure_fairness(url, d, int(20_000 * scale), int(500 * scale)),
        "recovery": lambda url, d: measure_recovery(url, d, max(4, int(20 * scale))),
    }
    if args.only:
        phases = {name: phases[name] for name in args.only.split(",")}
    for name, measure in phases.items():  # a fresh Redis each: no phase inherits another's backlog
        with (
            tempfile.TemporaryDirectory(prefix="aijobs-bench-") as tmp,
            harness.redis(Path(tmp)) as redis_url,
        ):
            print(f"measuring {name} ...", flush=True)
            results[name] = measure(redis_url, Path(tmp))
    if "end_to_end" in results and "arq_noop" in results:
        results["ratio_e2e_over_arq"] = round(
            results["end_to_end"]["jobs_per_s"] / results["arq_noop"]["jobs_per_s"], 2
        )
    if "end_to_end" in results and "end_to_end_bare" in results:
        results["ratio_e2e_over_bare"] = round(
            results["end_to_end"]["jobs_per_s"] / results["end_to_end_bare"]["jobs_per_s"], 3
        )
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(results, indent=2))
    if args.only:  # a partial run is printed as measured, and never replaces latest.json
        print(json.dumps(results, indent=2))
        return 0
    report(results)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    return 0


def machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }


def report(results: dict[str, Any]) -> None:
    print("\n(a) POST /v1/jobs at fixed offered rates (target: p99 <= 10 ms at 200/s)")
    print(f"{'offered/s':>10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for row in results["submit"]:
        print(
            f"{row['offered_per_s']:>10.0f} {row['requests']:>9} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f} {row['errors']:>7}"
        )
    print(f"API peak RSS: {results['submit'][-1]['api_peak_rss_mb']} MiB")
    e2e, arq, flight = results["end_to_end"], results["arq_noop"], results["in_flight"]
    print("\n(b) end to end, HTTP → API → Redis → worker → sim(0 ms) → succeeded, one worker")
    print(f"    {e2e['jobs']} jobs in {e2e['total_s']} s = {e2e['jobs_per_s']} jobs/s")
    print(f"    (submitting took {e2e['submit_s']} s); worker peak RSS {e2e['worker_peak_rss_mb']} MiB")
    bare = results["end_to_end_bare"]
    print("(b0) the same without breakers, ledger and budgets in the worker")
    print(f"    {bare['jobs']} jobs in {bare['total_s']} s = {bare['jobs_per_s']} jobs/s")
    overhead = 1 - results["ratio_e2e_over_bare"]
    print(f"    routing + ledger + metrics cost {overhead:.1%} of jobs/s  (target <= 15%)")
    print("(c) raw arq no-op jobs drained by one worker, same lane settings")
    print(f"    {arq['jobs']} jobs in {arq['drain_s']} s = {arq['jobs_per_s']} jobs/s")
    print(f"    (b)/(c) = {results['ratio_e2e_over_arq']}  (target >= 0.5)")
    print("(d) in-flight: sim jobs of 1 s each on one worker (target: 5,000 in < 3 s, RSS < 300 MB)")
    print(f"    {flight['jobs']} jobs finished {flight['total_s']} s after the first was written")
    print(
        f"    (writing + enqueueing took {flight['enqueue_s']} s); "
        f"worker peak RSS {flight['worker_peak_rss_mb']} MiB"
    )
    media = results["media"]
    print(
        f"(e) media: {media['jobs']} video tasks of {media['render_s']:g} s each at a fake provider, one "
        "worker (target: 1,000 x 20 s in < 30 s, RSS < 400 MB)"
    )
    print(
        f"    all finished {media['total_s']} s after the first was written; worker peak RSS "
        f"{media['worker_peak_rss_mb']} MiB"
    )
    hooks = results["webhooks"]
    plain, hooked, sent = hooks["plain"], hooks["with_webhooks"], hooks["deliveries"]
    print(
        f"(f) webhooks: {hooks['jobs']} jobs on one worker (interactive + webhooks lanes), each job's "
        f"job.succeeded to a receiver answering in {hooks['receiver_delay_s'] * 1000:.0f} ms"
    )
    print(
        f"    jobs/s without webhooks {plain['jobs_per_s']}, with {hooked['jobs_per_s']}: "
        f"ratio {hooks['throughput_ratio']} (target >= 0.90)"
    )
    print(
        f"    {sent['delivered']} delivered in {sent['span_s']} s = {sent['deliveries_per_s']}/s; "
        f"event -> received p50 {sent['latency_p50_ms']} ms, p99 {sent['latency_p99_ms']} ms"
    )
    chat = results["openai"]
    print("(g) /v1/chat/completions against a zero-latency OpenAI-wire fake, one API process")
    print(
        f"    one at a time: direct p50 {chat['direct']['p50_ms']} / p99 {chat['direct']['p99_ms']} ms, "
        f"via aijobs p50 {chat['via_aijobs']['p50_ms']} / p99 {chat['via_aijobs']['p99_ms']} ms"
    )
    print(f"    added p50 {chat['added_p50_ms']} ms, p99 {chat['added_p99_ms']} ms  (target <= 1 / <= 3 ms)")
    print(
        f"    concurrency 32: {chat['completions_per_s']} completions/s, p50 {chat['loaded']['p50_ms']} ms, "
        f"{chat['errors']} errors  (target >= 1,000/s); API peak RSS {chat['api_peak_rss_mb']} MiB"
    )
    print(
        f"    streaming time to first byte added: p50 {chat['ttfb_added_p50_ms']} ms, "
        f"p99 {chat['ttfb_added_p99_ms']} ms"
    )
    print(
        f"    floor (a bare forwarder, same stack): added p50 {chat['floor_added_p50_ms']} ms, "
        f"p99 {chat['floor_added_p99_ms']} ms; {chat['floor_completions_per_s']} completions/s at 32"
    )
    print("(h) chat batches (OpenAI Batch API) on one batch-lane worker against the same fake")
    for run in results["batch"]:
        print(
            f"    {run['lines']} lines in {run['seconds']} s = {run['lines_per_s']} lines/s; "
            f"worker peak RSS {run['worker_peak_rss_mb']} MiB"
        )
    if "fairness" in results:
        fair = results["fairness"]
        print(
            "(i) interactive chat one at a time, idle and beside a batch on its own worker (target p99 +20%)"
        )
        for path in ("chat_completions", "jobs"):
            row = fair[path]
            print(
                f"    {path}: idle p50 {row['idle']['p50_ms']} / p99 {row['idle']['p99_ms']} ms; during a "
                f"{fair['batch']['lines']}-line batch p50 {row['during_batch']['p50_ms']} / p99 "
                f"{row['during_batch']['p99_ms']} ms: p99 x{row['p99_ratio']}"
            )
    if "recovery" in results:
        rec = results["recovery"]
        print(f"(j) crash recovery: {rec['kills']} SIGKILLs of the worker holding a job, shipped settings")
        print(
            f"    running again after p50 {rec['recovered_p50_s']} s, p99 {rec['recovered_p99_s']} s, max "
            f"{rec['recovered_max_s']} s (target p50 <= 15, p99 <= 30); {rec['succeeded']} of "
            f"{rec['kills']} jobs succeeded"
        )
    print(f"\nresults written to {RESULTS}/latest.json")


if __name__ == "__main__":
    sys.exit(main())
