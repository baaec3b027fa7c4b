"""Webhooks end to end: the API and a worker (with the webhooks lane) as processes, a real receiver.

The receiver listens on 127.0.0.2, the one address the service's outbound guard allows here, so
``localhost`` (127.0.0.1) is still refused like any other internal address. The retry schedule is
compressed to [0, 0.2, 0.2] s.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import orjson
import pytest
from standardwebhooks import Webhook

from tests.conftest import TEST_ROUTING, Service, new_tenant, own_db, run_service
from tests.fakes.receiver import Answer, Receiver, running_receiver

WEBHOOKS = """
[webhooks]
schedule_s = [0, 0.2, 0.2]
connect_timeout_s = 1
timeout_s = 1.5
rotation_overlap_s = 3600
"""
_names = itertools.count()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver("127.0.0.2") as running:
        yield running


@pytest.fixture(scope="module")
def hooks_service(
    redis_url: str, s3_endpoint: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {"AIJOBS_OUTBOUND_ALLOW": "127.0.0.2/32"}
    text = TEST_ROUTING.read_text() + WEBHOOKS
    workdir = tmp_path_factory.mktemp("hooks")
    with run_service(own_db(redis_url, 3), s3_endpoint, "aijobs-test", text, workdir, env) as svc:
        yield svc


@pytest.fixture
async def api(hooks_service: Service) -> AsyncIterator[httpx2.AsyncClient]:
    """A client for a fresh tenant, so endpoints registered by one test never see another's jobs."""
    key = await new_tenant(hooks_service.env["REDIS_URL"], f"hooks-{next(_names)}-{secrets.token_hex(3)}")
    async with httpx2.AsyncClient(
        base_url=hooks_service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        yield http


def path() -> str:
    return f"/hook/{secrets.token_hex(6)}"


async def job_secret(api: httpx2.AsyncClient) -> str:
    response = await api.post("/v1/webhooks/secret")
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


async def submit(api: httpx2.AsyncClient, receiver: Receiver, where: str, **extra: Any) -> dict[str, Any]:
    body = {
        "type": "chat",
        "feature": extra.pop("feature", "support-chat"),
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "webhook": {"url": receiver.url(where), **extra},
    }
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def deliveries(api: httpx2.AsyncClient, job_id: str, settled: int, timeout_s: float = 10) -> list[Any]:
    """The job's deliveries once ``settled`` of them are no longer pending."""
    for _ in range(int(timeout_s / 0.05)):
        data: list[Any] = (await api.get(f"/v1/jobs/{job_id}/deliveries")).json()["data"]
        if sum(d["state"] != "pending" for d in data) >= settled:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries of {job_id} did not settle: {data}")


async def test_a_delivery_verifies_with_the_standardwebhooks_package(
    api: httpx2.AsyncClient, receiver: Receiver
) -> None:
    secret = await job_secret(api)
    where = path()
    job = await submit(api, receiver, where, events=["job.succeeded"])
    [request] = await receiver.wait_for(where, 1)
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["id"] == request.headers["webhook-id"]
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "succeeded"
    assert payload["data"]["output"]["message"]["content"]
    assert request.headers["content-type"] == "application/json"
    # the secret appears nowhere a caller or receiver can read it
    shown = (await api.get(f"/v1/jobs/{job['id']}")).text + (
        await api.get(f"/v1/jobs/{job['id']}/deliveries")
    ).text
    assert secret not in shown and secret not in request.body.decode()
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(request.body, request.headers)


async def test_running_then_succeeded_in_order(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    await job_secret(api)
    where = path()
    job = await submit(api, receiver, where)
    requests = await receiver.wait_for(where, 2)
    types = [orjson.loads(r.body)["type"] for r in requests]
    assert sorted(types) == ["job.running", "job.succeeded"]
    running = next(orjson.loads(r.body) for r in requests if b"job.running" in r.body[:40])
    assert running["data"]["status"] == "running" and running["data"]["output"] is None  # as it was then
    data = await deliveries(api, job["id"], settled=2)
    assert {d["event_type"] for d in data} == {"job.running", "job.succeeded"}
    assert all(d["state"] == "delivered" and d["attempts"][0]["status_code"] == 200 for d in data)


async def test_a_500_is_retried_with_the_same_webhook_id(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    secret = await job_secret(api)
    where = path()
    receiver.answer(where, Answer(500))
    job = await submit(api, receiver, where, events=["job.succeeded"])
    first, second = await receiver.wait_for(where, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    Webhook(secret).verify(second.body, second.headers)
    [delivery] = await deliveries(api, job["id"], settled=1)
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert delivery["attempts"][0]["error"] == "HTTP 500"
    assert all(a["latency_ms"] >= 0 and a["at"].endswith("Z") for a in delivery["attempts"])
    await asyncio.sleep(0.5)
    assert len(receiver.received(where)) == 2  # delivered once more, then never again


async def test_retry_after_is_honoured(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    await job_secret(api)
    where = path()
    receiver.answer(where, Answer(429, (("Retry-After", "1"),)))
    await submit(api, receiver, where, events=["job.succeeded"])
    first, second = await receiver.wait_for(where, 2, timeout_s=5)
    assert second.at - first.at >= 0.95  # the schedule alone would have waited 0.2 s


async def test_dead_letter_after_the_last_try_then_replay(
    api: httpx2.AsyncClient, receiver: Receiver
) -> None:
    await job_secret(api)
    where = path()
    receiver.always(where, Answer(503))
    job = await submit(api, receiver, where, events=["job.succeeded"])
    [delivery] = await deliveries(api, job["id"], settled=1)
    assert delivery["state"] == "dead"
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 503, 503]
    assert len(receiver.received(where)) == 3
    dead = (await api.get("/v1/webhooks/dead-letters")).json()["data"]
    assert [d["id"] for d in dead] == [delivery["id"]]

    receiver.always(where, Answer(200))
    replay = await api.post(f"/v1/jobs/{job['id']}/deliveries/{delivery['id']}/redeliver")
    assert replay.status_code == 202, replay.text
    requests = await receiver.wait_for(where, 4)
    assert requests[3].headers["webhook-id"] == delivery["id"]
    for _ in range(100):
        [delivery] = (await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["data"]
        if delivery["state"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert delivery["state"] == "delivered" and delivery["attempts"][-1]["replay"] is True
    assert (await api.get("/v1/webhooks/dead-letters")).json()["data"] == []


async def test_410_disables_the_endpoint(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    where = path()
    receiver.always(where, Answer(410))
    created = await api.post("/v1/webhooks", json={"url": receiver.url(where), "events": ["job.succeeded"]})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    job = (
        await api.post(
            "/v1/jobs", json={"type": "chat", "input": {"messages": [{"role": "user", "content": "x"}]}}
        )
    ).json()
    [delivery] = await deliveries(api, job["id"], settled=1)
    assert delivery["state"] == "disabled" and delivery["endpoint_id"] == endpoint["id"]
    shown = (await api.get(f"/v1/webhooks/{endpoint['id']}")).json()
    assert shown["enabled"] is False and "410" in shown["disabled_reason"]
    assert "secret" not in shown and endpoint["secret"] not in (await api.get("/v1/webhooks")).text

    second = (
        await api.post(
            "/v1/jobs",
            json={"type": "chat", "input": {"messages": [{"role": "user", "content": "y"}]}},
            headers={"Prefer": "wait=5"},
        )
    ).json()
    assert second["status"] == "succeeded"
    await asyncio.sleep(0.5)
    assert len(receiver.received(where)) == 1  # nothing more is sent to a disabled endpoint
    assert (await api.get(f"/v1/jobs/{second['id']}/deliveries")).json()["data"] == []
    enabled = await api.post(f"/v1/webhooks/{endpoint['id']}/enable")
    assert enabled.json()["enabled"] is True


async def test_event_filters_are_respected(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    await job_secret(api)
    own, failures = path(), path()
    created = await api.post("/v1/webhooks", json={"url": receiver.url(failures), "events": ["job.failed"]})
    assert created.status_code == 201
    ok = await submit(api, receiver, own, events=["job.succeeded"])
    bad = await submit(api, receiver, own, events=["job.succeeded"], feature="broken-chat")
    await deliveries(api, ok["id"], settled=1)
    [failed] = await receiver.wait_for(failures, 1)
    assert orjson.loads(failed.body)["data"]["id"] == bad["id"]
    assert orjson.loads(failed.body)["data"]["error"]["code"]
    await asyncio.sleep(0.5)
    assert [orjson.loads(r.body)["data"]["id"] for r in receiver.received(own)] == [ok["id"]]
    assert len(receiver.received(failures)) == 1


async def test_rotation_signs_with_old_and_new_secrets(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    where = path()
    created = (
        await api.post("/v1/webhooks", json={"url": receiver.url(where), "events": ["job.succeeded"]})
    ).json()
    rotated = (await api.post(f"/v1/webhooks/{created['id']}/rotate")).json()
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_valid_until"]
    await api.post(
        "/v1/jobs", json={"type": "chat", "input": {"messages": [{"role": "user", "content": "z"}]}}
    )
    [request] = await receiver.wait_for(where, 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(created["secret"]).verify(request.body, request.headers)
    Webhook(rotated["secret"]).verify(request.body, request.headers)
    deleted = await api.delete(f"/v1/webhooks/{created['id']}")
    assert deleted.json()["deleted"] is True
    assert (await api.get(f"/v1/webhooks/{created['id']}")).status_code == 404


async def test_a_slow_receiver_never_delays_the_job(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    await job_secret(api)
    where = path()
    receiver.always(where, Answer(200, delay_s=3))  # longer than the 1.5 s attempt timeout
    job = await submit(api, receiver, where)
    done = (await api.get(f"/v1/jobs/{job['id']}", headers={"Prefer": "wait=5"})).json()
    for _ in range(40):
        done = (await api.get(f"/v1/jobs/{job['id']}")).json()
        if done["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert done["status"] == "succeeded"
    data = await deliveries(api, job["id"], settled=2, timeout_s=15)
    assert all(d["state"] == "dead" for d in data)
    assert all("no answer within 1.5 s" in a["error"] for d in data for a in d["attempts"])


async def test_a_redirect_is_not_followed(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    await job_secret(api)
    where = path()
    receiver.always(where, Answer(302, (("Location", "http://169.254.169.254/latest/meta-data/"),)))
    job = await submit(api, receiver, where, events=["job.succeeded"])
    [delivery] = await deliveries(api, job["id"], settled=1)
    assert delivery["state"] == "dead"
    assert {a["error"] for a in delivery["attempts"]} == {"HTTP 302 (redirects are not followed)"}


BLOCKED = [
    "http://localhost:8080/hook",  # a name resolving to 127.0.0.1
    "http://127.0.0.1/hook",
    "http://10.0.0.8/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",  # CGNAT
    "http://224.0.0.1/hook",  # multicast
    "http://240.0.0.1/hook",  # reserved
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[fc00::1]/hook",  # ULA
    "http://[fe80::1]/hook",  # link-local
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/hook",
]


@pytest.mark.parametrize("url", BLOCKED)
async def test_internal_addresses_are_refused(api: httpx2.AsyncClient, url: str) -> None:
    await job_secret(api)
    body = {
        "type": "chat",
        "input": {"messages": [{"role": "user", "content": "x"}]},
        "webhook": {"url": url},
    }
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "webhook.url" and "cannot be called" in error["message"]
    registered = await api.post("/v1/webhooks", json={"url": url})
    assert registered.status_code == 422 and registered.json()["error"]["param"] == "url"


@pytest.mark.parametrize(
    ("webhook", "param"),
    [
        ({"url": "ftp://example.com/hook"}, "webhook.url"),
        ({"url": "https://example.com/hook", "events": ["job.queued"]}, "webhook.events.0"),
        ({"url": "https://example.com/hook", "events": []}, "webhook.events"),
        ({"url": "https://example.com/hook", "secret": "mine"}, "webhook.secret"),
        ({"url": "http://[::1/hook"}, "webhook.url"),  # malformed: refused, not a 500
        ({"url": f"http://{'a' * 64}.example/hook"}, "webhook.url"),  # a label IDNA cannot encode
        ({"url": "http://93.184.215.14/a\x01b"}, "webhook.url"),  # a control character
    ],
)
async def test_bad_webhook_fields_are_named(
    api: httpx2.AsyncClient, webhook: dict[str, Any], param: str
) -> None:
    await job_secret(api)
    body = {"type": "chat", "input": {"messages": [{"role": "user", "content": "x"}]}, "webhook": webhook}
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param


async def test_a_job_webhook_needs_the_job_secret_first(api: httpx2.AsyncClient, receiver: Receiver) -> None:
    body = {
        "type": "chat", "input": {"messages": [{"role": "user", "content": "x"}]},
        "webhook": {"url": receiver.url(path())},
    }  # fmt: skip
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "webhook"
    assert "POST /v1/webhooks/secret" in response.json()["error"]["message"]


async def test_deliveries_are_the_owners_only(api: httpx2.AsyncClient, hooks_service: Service) -> None:
    job = (
        await api.post(
            "/v1/jobs", json={"type": "chat", "input": {"messages": [{"role": "user", "content": "x"}]}}
        )
    ).json()
    other = await new_tenant(hooks_service.env["REDIS_URL"], f"other-{secrets.token_hex(3)}")
    response = await api.get(f"/v1/jobs/{job['id']}/deliveries", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 404
    missing = await api.post(f"/v1/jobs/{job['id']}/deliveries/msg_{'a' * 26}/redeliver")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "delivery_id"
