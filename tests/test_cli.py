"""The ``aijobs`` command: keys are created once and work; bad arguments fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2

from tests.conftest import ROOT, Service


def aijobs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aijobs", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_keys_create_prints_a_working_key_once(service: Service) -> None:
    result = aijobs("keys", "create", "--tenant", "initech", "--name", "ci", env=service.env)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("aj_") and len(key) > 40
    assert "cannot be shown again" in result.stderr
    response = httpx2.get(f"{service.url}/v1/jobs", headers=service.headers(key))
    assert response.status_code == 200
    assert response.json()["data"] == []  # a new tenant sees nothing of the others'


def test_bad_tenant_names_and_lanes_are_refused(service: Service) -> None:
    bad_tenant = aijobs("keys", "create", "--tenant", "Not OK", env=service.env)
    assert bad_tenant.returncode == 2
    assert "tenant name" in bad_tenant.stderr
    bad_lane = aijobs("worker", "--lanes", "interactive,fast", env=service.env)
    assert bad_lane.returncode == 2
    assert "unknown lane(s) ['fast']" in bad_lane.stderr


def test_routing_check_prints_the_resolved_routes(service: Service) -> None:
    result = aijobs("routing", "check", "routing.dev.toml", env=service.env)
    assert result.returncode == 0, result.stderr
    assert "coding" in result.stdout
    assert "sim:sim-reasoner → sim:sim-fast" in result.stdout


def test_submit_waits_for_the_result_and_reports_bad_input(service: Service) -> None:
    env = {**service.env, "AIJOBS_KEY": service.key, "AIJOBS_PUBLIC_URL": service.url}
    done = aijobs("submit", "embed", '{"input": ["a red fox"]}', "--wait", "20", env=env)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert len(job["output"]["embeddings"][0]) == 256
    failed = aijobs("submit", "chat", '{"messages": [{"role": "user", "content": "x"}]}', "--feature",
                    "broken-chat", "--wait", "20", env=env)  # fmt: skip
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "provider_unavailable"
    bad = aijobs("submit", "image", '{"prompt": "x", "size": "1x1"}', env=env)
    assert bad.returncode == 2
    assert "422: input.size: each side must be between 64 and 4096 px" in bad.stderr
    worse = aijobs("submit", "image", '{"prompt": "x", "size": "large"}', env=env)
    assert "422: input.size: must be WIDTHxHEIGHT in pixels, e.g. 1024x1024" in worse.stderr


def test_a_revoked_key_stops_working(service: Service) -> None:
    key = aijobs("keys", "create", "--tenant", "umbrella", env=service.env).stdout.strip()
    assert httpx2.get(f"{service.url}/v1/jobs", headers=service.headers(key)).status_code == 200
    assert aijobs("keys", "revoke", key, env=service.env).returncode == 0
    assert httpx2.get(f"{service.url}/v1/jobs", headers=service.headers(key)).status_code == 401
    again = aijobs("keys", "revoke", key, env=service.env)
    assert again.returncode == 1
    assert "no such key" in again.stderr
