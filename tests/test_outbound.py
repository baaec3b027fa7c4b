"""The outbound URL guard: every address class refused, names resolved first, redirects re-checked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from aijobs.outbound import Guard, OutboundRefused

REFUSED = [
    "http://127.0.0.1/x",
    "http://[::1]/x",
    "http://10.1.2.3/x",
    "http://172.16.0.9/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/x",  # CGNAT
    "http://224.0.0.1/x",  # multicast
    "http://240.0.0.1/x",  # reserved
    "http://0.0.0.0/x",
    "http://[fd00::1]/x",  # IPv6 unique local
    "http://[fe80::1]/x",  # IPv6 link-local
    "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/x",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="non-public"):
        await Guard().check(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "http:///nohost"])
async def test_only_http_urls_with_a_host_pass(url: str) -> None:
    with pytest.raises(OutboundRefused):
        await Guard().check(url)


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(OutboundRefused, match=r"localhost resolves to .*non-public"):
        await Guard().check("http://localhost:8080/image.png")


async def test_a_public_address_passes_and_is_pinned() -> None:
    checked = await Guard().check("https://93.184.215.14/image.png")
    assert checked.address == "93.184.215.14"


async def test_the_allowlist_admits_named_hosts_and_networks() -> None:
    assert (await Guard(("localhost",)).check("http://localhost/x")).host == "localhost"
    assert (await Guard(("127.0.0.0/8",)).check("http://127.0.0.2/x")).address == "127.0.0.2"
    with pytest.raises(OutboundRefused):
        await Guard(("127.0.0.0/8",)).check("http://10.0.0.1/x")


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


async def test_fetch_reads_an_allowed_url_and_refuses_a_redirect_to_metadata(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    guard = Guard(("127.0.0.1",))
    body, content_type = await guard.fetch(http, f"{media_fakes}/_media/tasks", max_bytes=1024)
    assert body == b"[]" and content_type == "application/json"
    redirect = f"{media_fakes}/_media/redirect?to=http://169.254.169.254/latest/meta-data/"
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
        await guard.fetch(http, redirect, max_bytes=1024)


async def test_fetch_enforces_the_size_limit(http: httpx2.AsyncClient, media_fakes: str) -> None:
    guard = Guard(("127.0.0.1",))
    with pytest.raises(OutboundRefused, match="larger than 1 bytes"):
        await guard.fetch(http, f"{media_fakes}/_media/tasks", max_bytes=1)
