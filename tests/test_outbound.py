"""The outbound URL guard: every address class refused, names resolved first, redirects re-checked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx2
import pytest

from aijobs.errors import InvalidRequest
from aijobs.files import Files
from aijobs.inputs import inline_image
from aijobs.outbound import MAX_URL_LENGTH, Guard, Names, OutboundRefused
from aijobs.types.image import ImageInput

#: (URL, what the refusal says the address is): every IANA special-purpose block (IPv4 and IPv6),
#: and every IPv6 form that carries an IPv4 address, judged by that address.
REFUSED = [
    ("http://127.0.0.1/x", "loopback"),
    ("http://[::1]/x", "loopback"),
    ("http://0.0.0.0/x", "this network"),
    ("http://0.1.2.3/x", "this network"),
    ("http://10.1.2.3/x", "private-use"),
    ("http://172.16.0.9/x", "private-use"),
    ("http://172.31.255.255/x", "private-use"),
    ("http://192.168.1.1/x", "private-use"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/x", "CGNAT"),
    ("http://100.127.255.254/x", "CGNAT"),
    ("http://192.0.0.8/x", "IETF protocol assignments"),  # IPv4 dummy address: Python 3.11 calls it global
    ("http://192.0.0.9/x", "IETF protocol assignments"),
    ("http://192.0.0.170/x", "IETF protocol assignments"),
    ("http://192.0.2.1/x", "documentation"),
    ("http://198.51.100.7/x", "documentation"),
    ("http://203.0.113.7/x", "documentation"),
    ("http://192.31.196.1/x", "AS112"),
    ("http://192.52.193.1/x", "AMT"),
    ("http://192.88.99.1/x", "6to4 relay anycast"),
    ("http://192.175.48.1/x", "AS112 direct delegation"),
    ("http://198.18.0.1/x", "benchmarking"),
    ("http://198.19.255.1/x", "benchmarking"),
    ("http://224.0.0.1/x", "multicast"),
    ("http://239.255.255.250/x", "multicast"),
    ("http://240.0.0.1/x", "reserved"),
    ("http://255.255.255.255/x", "broadcast"),
    ("http://[::]/x", "unspecified"),
    ("http://[fd00::1]/x", "unique local"),
    ("http://[fc00::1]/x", "unique local"),
    ("http://[fe80::1]/x", "link-local"),
    ("http://[fe80::1%25eth0]/x", "link-local"),
    ("http://[fec0::1]/x", "site-local"),
    ("http://[ff02::1]/x", "multicast"),
    ("http://[100::1]/x", "discard-only"),
    ("http://[100:0:0:1::1]/x", "dummy prefix"),
    ("http://[2001:db8::1]/x", "documentation"),
    ("http://[3fff::1]/x", "documentation"),
    ("http://[5f00::1]/x", "SRv6"),
    ("http://[2001:2::1]/x", "IETF protocol assignments"),  # benchmarking
    ("http://[2001:1::1]/x", "IETF protocol assignments"),  # PCP anycast: refused, conservatively
    ("http://[2001:4:112::1]/x", "IETF protocol assignments"),  # AS112-v6
    ("http://[2001:20::1]/x", "IETF protocol assignments"),  # ORCHIDv2
    ("http://[2620:4f:8000::1]/x", "AS112 direct delegation"),
    ("http://[4000::1]/x", "reserved"),  # outside global unicast
    # IPv4-mapped: the IPv4 address decides
    ("http://[::ffff:127.0.0.1]/x", "loopback, as the IPv4-mapped form of 127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/x", "link-local, as the IPv4-mapped form of 169.254.169.254"),
    ("http://[::ffff:10.0.0.1]/x", "private-use, as the IPv4-mapped form of 10.0.0.1"),
    ("http://[::ffff:c000:8]/x", "IETF protocol assignments, as the IPv4-mapped form of 192.0.0.8"),
    # IPv4-translated and IPv4-compatible (deprecated): refused whatever they carry
    ("http://[::ffff:0:7f00:1]/x", "IPv4-translated"),
    ("http://[::127.0.0.1]/x", "IPv4-compatible"),
    ("http://[::169.254.169.254]/x", "IPv4-compatible"),
    ("http://[::93.184.215.14]/x", "IPv4-compatible"),
    # 6to4: 2002:AABB:CCDD:: carries AA.BB.CC.DD
    ("http://[2002:7f00:1::]/x", "loopback, as the 6to4 form of 127.0.0.1"),
    ("http://[2002:7f00:1::1]/x", "loopback, as the 6to4 form of 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::]/x", "link-local, as the 6to4 form of 169.254.169.254"),
    ("http://[2002:a00:1::5]/x", "private-use, as the 6to4 form of 10.0.0.1"),
    ("http://[2002:c000:8::]/x", "IETF protocol assignments, as the 6to4 form of 192.0.0.8"),
    ("http://[2002::1]/x", "this network, as the 6to4 form of 0.0.0.0"),
    # NAT64, the well-known prefix: 64:ff9b::AABB:CCDD carries AA.BB.CC.DD
    ("http://[64:ff9b::a9fe:a9fe]/x", "link-local, as the NAT64 form of 169.254.169.254"),
    ("http://[64:ff9b::7f00:1]/x", "loopback, as the NAT64 form of 127.0.0.1"),
    ("http://[64:ff9b::10.0.0.1]/x", "private-use, as the NAT64 form of 10.0.0.1"),
    # NAT64, local use (RFC 8215): where the IPv4 bits sit is the operator's choice, so refused whole
    ("http://[64:ff9b:1::808:808]/x", "local-use NAT64"),
    ("http://[64:ff9b:1::a9fe:a9fe]/x", "local-use NAT64"),
    # Teredo (2001::/32): server 65.54.227.120; clients 10.0.0.1 and 127.0.0.1, stored inverted
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x", "Teredo"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x", "Teredo"),
    ("http://[2001:0:a9fe:a9fe::1]/x", "Teredo"),  # server 169.254.169.254
    # IPv4 spelled the ways inet_aton reads (resolved without any DNS query)
    ("http://2130706433/x", "loopback"),
    ("http://0x7f000001/x", "loopback"),
    ("http://127.1/x", "loopback"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_non_public_addresses_are_refused(url: str, why: str) -> None:
    with pytest.raises(OutboundRefused, match="non-public") as refused:
        await Guard().check(url)
    assert why in str(refused.value)


PUBLIC = [
    ("https://93.184.215.14/image.png", "93.184.215.14"),
    ("https://[2606:4700::1111]/x", "2606:4700::1111"),
    ("http://[::ffff:93.184.215.14]/x", "::ffff:5db8:d70e"),  # IPv4-mapped public
    ("http://[2002:5db8:d70e::1]/x", "2002:5db8:d70e::1"),  # 6to4 of 93.184.215.14
    ("http://[64:ff9b::5db8:d70e]/x", "64:ff9b::5db8:d70e"),  # what DNS64 answers for a v4-only name
    ("http://192.0.1.1/x", "192.0.1.1"),  # next to 192.0.0.0/24 and 192.0.2.0/24
    ("http://100.128.0.1/x", "100.128.0.1"),  # just past CGNAT
    ("http://172.32.0.1/x", "172.32.0.1"),  # just past 172.16.0.0/12
]


@pytest.mark.parametrize(("url", "address"), PUBLIC)
async def test_public_addresses_pass_and_are_pinned(url: str, address: str) -> None:
    assert (await Guard().check(url)).address == address


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "http:///nohost"])
async def test_only_http_urls_with_a_host_pass(url: str) -> None:
    with pytest.raises(OutboundRefused):
        await Guard().check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/a\x01b",  # urlsplit keeps it; the HTTP client cannot send it
        "http://[::1/x",
        "http://93.184.215.14:99999/x",
        "http://0177.0.0.1/x",  # getaddrinfo would read it as 127.0.0.1; httpx2 refuses it
        "http://" + "a" * 64 + ".example/x",  # an over-long IDNA label
    ],
)
async def test_a_url_the_client_cannot_send_is_refused_as_malformed(url: str) -> None:
    with pytest.raises(OutboundRefused, match=r"malformed|port is invalid"):
        await Guard(("93.184.215.14",)).check(url)


async def test_urls_are_at_most_max_url_length_characters_even_on_allowed_hosts() -> None:
    base = "http://127.0.0.1/"
    longest = base + "a" * (MAX_URL_LENGTH - len(base))
    assert (await Guard(("127.0.0.1",)).check(longest)).address == "127.0.0.1"
    for url in (longest + "a", base + "a" * 70_000):
        with pytest.raises(OutboundRefused, match=f"longer than {MAX_URL_LENGTH} characters"):
            await Guard(("127.0.0.1",)).check(url)


Resolver = Callable[..., Any]


def answering(table: dict[str, list[str]], calls: list[str]) -> Resolver:
    """A stand-in for the loop's getaddrinfo: names in ``table`` resolve, others do not."""

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]

    return getaddrinfo


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_public(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {
        "mixed.test": ["93.184.215.14", "2002:a9fe:a9fe::1"],
        "nat64.test": ["64:ff9b::a9fe:a9fe"],
        "public.test": ["93.184.215.14", "2606:4700::1111"],
    }
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", answering(table, []))
    with pytest.raises(
        OutboundRefused, match=r"mixed\.test resolves to a non-public address \(link-local, as"
    ):
        await Guard().check("https://mixed.test/x")
    with pytest.raises(OutboundRefused, match=r"NAT64 form of 169\.254\.169\.254"):
        await Guard().check("https://nat64.test/x")
    assert (await Guard().check("https://public.test/x")).address == "93.184.215.14"
    with pytest.raises(OutboundRefused, match="does not resolve"):
        await Guard().check("https://nowhere.test/x")


async def test_names_resolved_once_per_check_of_many(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    table = {"images.test": ["93.184.215.14"]}
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", answering(table, calls))
    names: Names = {}
    for path in ("a", "b", "c"):
        await Guard().check(f"https://images.test/{path}.png", names=names)
        with pytest.raises(OutboundRefused, match="does not resolve"):
            await Guard().check(f"https://nowhere.test/{path}.png", names=names)
    assert calls == ["images.test", "nowhere.test"]


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(OutboundRefused, match=r"localhost resolves to .*non-public"):
        await Guard().check("http://localhost:8080/image.png")


async def test_the_allowlist_admits_named_hosts_and_networks() -> None:
    assert (await Guard(("localhost",)).check("http://localhost/x")).host == "localhost"
    assert (await Guard(("127.0.0.0/8",)).check("http://127.0.0.2/x")).address == "127.0.0.2"
    with pytest.raises(OutboundRefused):
        await Guard(("127.0.0.0/8",)).check("http://10.0.0.1/x")
    with pytest.raises(OutboundRefused):  # an allowed network does not admit its 6to4 form
        await Guard(("127.0.0.0/8",)).check("http://[2002:7f00:1::]/x")


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
    with pytest.raises(OutboundRefused, match=r"redirects to one that cannot be fetched: 169\.254\.169\.254"):
        await guard.fetch(http, redirect, max_bytes=1024)
    to_6to4 = f"{media_fakes}/_media/redirect?to=http://[2002:a9fe:a9fe::]/latest/meta-data/"
    with pytest.raises(OutboundRefused, match=r"6to4 form of 169\.254\.169\.254"):
        await guard.fetch(http, to_6to4, max_bytes=1024)


async def test_fetch_enforces_the_size_limit(http: httpx2.AsyncClient, media_fakes: str) -> None:
    guard = Guard(("127.0.0.1",))
    with pytest.raises(OutboundRefused, match="larger than 1 bytes"):
        await guard.fetch(http, f"{media_fakes}/_media/tasks", max_bytes=1)


@pytest.fixture
async def redirector() -> AsyncIterator[Callable[[str], str]]:
    """A bare HTTP server on 127.0.0.1 answering every request with a 302 to the Location given
    (``redirector(location)`` → a URL that redirects there), whatever that Location holds."""
    locations: dict[str, str] = {}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        location = locations[path].encode("latin-1")
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def redirecting_to(location: str) -> str:
        path = f"/r{len(locations)}"
        locations[path] = location
        return f"http://127.0.0.1:{port}{path}"

    async with server:
        yield redirecting_to


async def test_fetch_refuses_a_redirect_to_an_over_long_or_malformed_url(
    http: httpx2.AsyncClient, redirector: Callable[[str], str]
) -> None:
    guard = Guard(("127.0.0.1",))
    long_url = redirector("http://127.0.0.1/" + "a" * 70_000)  # past httpx2's own 65,536 limit too
    with pytest.raises(OutboundRefused, match=f"redirects to one longer than {MAX_URL_LENGTH}"):
        await guard.fetch(http, long_url, max_bytes=1024)
    long_path = redirector("/" + "b" * (MAX_URL_LENGTH - 10))  # relative: the joined URL is the long one
    with pytest.raises(OutboundRefused, match=f"cannot be fetched: the URL is longer than {MAX_URL_LENGTH}"):
        await guard.fetch(http, long_path, max_bytes=1024)
    for location in ("http://[::1", "http://127.0.0.1/a\x01b"):
        with pytest.raises(OutboundRefused, match="malformed"):
            await guard.fetch(http, redirector(location), max_bytes=1024)


CLIENT_ERRORS = [
    httpx2.InvalidURL("Invalid non-printable ASCII character in URL"),
    httpx2.UnsupportedProtocol("Request URL has an unsupported protocol"),
    httpx2.LocalProtocolError("Illegal header value"),
    httpx2.RemoteProtocolError("Server disconnected"),
    httpx2.ConnectError("All connection attempts failed"),
    httpx2.ReadTimeout("timed out"),
    httpx2.DecodingError("bad gzip"),
    httpx2.StreamClosed(),
    ValueError("a header the transport refuses"),
]


@pytest.mark.parametrize("error", CLIENT_ERRORS, ids=lambda e: type(e).__name__)
async def test_every_client_error_while_fetching_is_a_refusal(error: Exception) -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise error

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fail)) as client:
        with pytest.raises(OutboundRefused, match=f"fetching the URL failed: {type(error).__name__}"):
            await Guard(("127.0.0.1",)).fetch(client, "http://127.0.0.1:9/x.png", max_bytes=1024)


@pytest.mark.parametrize(
    "error",
    [httpx2.InvalidURL("bad"), httpx2.UnsupportedProtocol("bad"), httpx2.LocalProtocolError("bad")],
    ids=lambda e: type(e).__name__,
)
async def test_a_webhook_url_the_client_cannot_send_is_a_refusal(error: Exception) -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise error

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fail)) as client:
        with pytest.raises(OutboundRefused, match=f"cannot be called: {type(error).__name__}"):
            await Guard(("127.0.0.1",)).post(
                client, "http://127.0.0.1:9/hook", content=b"{}", headers={},
                connect_timeout_s=1, timeout_s=2,
            )  # fmt: skip


async def test_an_input_image_redirecting_to_a_long_url_fails_the_job_as_the_callers_error(
    http: httpx2.AsyncClient, redirector: Callable[[str], str]
) -> None:
    request = ImageInput(prompt="a fox", image=redirector("http://127.0.0.1/" + "a" * 70_000))
    with pytest.raises(InvalidRequest, match=f"longer than {MAX_URL_LENGTH}") as refused:
        await inline_image(
            request, "t1", files=cast(Files, None), guard=Guard(("127.0.0.1",)), http=http, max_bytes=1024
        )
    assert refused.value.param == "input.image" and refused.value.code == "caller_invalid_request"
