"""The outbound URL guard: every URL the service fetches on a user's behalf goes through here.

A user who can make the service fetch a URL could otherwise reach what only the service can: its
Redis, the cloud metadata endpoint, an admin port on the private network. So a URL must be http(s);
its host is resolved and *every* address must be public (not loopback, private, link-local —
169.254.169.254 included —, CGNAT, multicast, reserved, unspecified, IPv6 ULA/link-local, or an
IPv4-mapped form of any of those). The connection then goes to the address that was checked, so a
DNS answer that changes between check and connect (rebinding) cannot slip through, and redirects
are followed by hand, each one checked again.

``allow`` (``AIJOBS_OUTBOUND_ALLOW``: host names and CIDRs) lets operators name internal hosts they
trust; ``make run`` allows localhost so the simulator's own URLs work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx2

MAX_REDIRECTS = 3
#: A webhook receiver's answer is read (then dropped) up to this, so the connection can be reused.
MAX_RESPONSE_BYTES = 64 * 1024
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The URL may not be fetched; the message says why (safe to show the caller)."""


def _blocked(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _blocked(address.ipv4_mapped)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


@dataclass(frozen=True, slots=True)
class Checked:
    """A URL that passed: the address to connect to, and the host name it stands for."""

    url: str
    host: str
    address: str


@dataclass(frozen=True)
class Guard:
    """Checks URLs against the rules above; ``allow`` names trusted hosts and networks."""

    allow: tuple[str, ...] = ()
    _hosts: frozenset[str] = field(init=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(init=False)

    def __post_init__(self) -> None:
        hosts, networks = set(), []
        for entry in self.allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        object.__setattr__(self, "_hosts", frozenset(hosts))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_setting(cls, text: str) -> Guard:
        """From a comma-separated list of host names and CIDRs."""
        return cls(tuple(part.strip() for part in text.split(",") if part.strip()))

    def _allowed(self, host: str, addresses: Iterable[IPAddress]) -> bool:
        if host in self._hosts:
            return True
        found = list(addresses)
        return bool(found) and all(any(a in net for net in self._networks) for a in found)

    async def check(self, url: str) -> Checked:
        """Resolve and check ``url``; :class:`OutboundRefused` when it must not be fetched."""
        try:
            return await self._check(url)
        except ValueError:  # a malformed URL or host (UnicodeError included: an over-long IDNA label)
            raise OutboundRefused("the URL is malformed") from None

    async def _check(self, url: str) -> Checked:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OutboundRefused("only http and https URLs can be fetched")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise OutboundRefused("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise OutboundRefused("the URL's port is invalid") from None
        addresses = await _resolve(host, port)
        if self._allowed(host, addresses):
            return Checked(url, host, str(addresses[0]))
        for address in addresses:
            if _blocked(address):
                raise OutboundRefused(f"{host} resolves to a non-public address; it cannot be called")
        return Checked(url, host, str(addresses[0]))

    async def fetch(
        self, http: httpx2.AsyncClient, url: str, *, max_bytes: int, timeout_s: float = 30.0
    ) -> tuple[bytes, str]:
        """GET ``url`` through the guard: ``(body, content type)``; at most ``max_bytes``.

        Redirects are followed by hand (at most 3), each target checked; any failure is an
        :class:`OutboundRefused` whose message is safe to show.
        """
        for _ in range(MAX_REDIRECTS + 1):
            checked = await self.check(url)
            try:
                async with http.stream(
                    "GET", _pinned(checked), headers={"Host": _host_header(checked.url)},
                    extensions={"sni_hostname": checked.host}, follow_redirects=False, timeout=timeout_s,
                ) as response:  # fmt: skip
                    if response.is_redirect and "location" in response.headers:
                        url = str(httpx2.URL(url).join(response.headers["location"]))
                        continue
                    if response.status_code >= 400:
                        raise OutboundRefused(f"fetching the URL failed: HTTP {response.status_code}")
                    return await _read(response, max_bytes), _content_type(response)
            except httpx2.HTTPError as exc:
                raise OutboundRefused(f"fetching the URL failed: {type(exc).__name__}") from None
        raise OutboundRefused(f"the URL redirects more than {MAX_REDIRECTS} times")

    async def post(
        self,
        http: httpx2.AsyncClient,
        url: str,
        *,
        content: bytes,
        headers: dict[str, str],
        connect_timeout_s: float,
        timeout_s: float,
    ) -> Sent:
        """POST ``content`` to ``url`` through the guard, redirects *not* followed (a webhook).

        :class:`OutboundRefused` when the URL may not be called; httpx2's errors (and
        ``TimeoutError`` after ``timeout_s`` in all) when the call fails. At most
        ``MAX_RESPONSE_BYTES`` of the answer are read.
        """
        async with asyncio.timeout(timeout_s):  # resolving the name counts against the total too
            checked = await self.check(url)
        timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
        async with asyncio.timeout(timeout_s), http.stream(
            "POST", _pinned(checked), content=content, headers={**headers, "Host": _host_header(checked.url)},
            extensions={"sni_hostname": checked.host}, follow_redirects=False, timeout=timeout,
        ) as response:  # fmt: skip
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    break
            return Sent(response.status_code, response.headers.get("retry-after"))


@dataclass(frozen=True, slots=True)
class Sent:
    """What a POST through the guard got back: the status and any ``Retry-After``."""

    status_code: int
    retry_after: str | None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise OutboundRefused(f"the host {host} does not resolve") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise OutboundRefused(f"the host {host} does not resolve")
    return list(dict.fromkeys(addresses))


def _pinned(checked: Checked) -> str:
    """The URL with its host replaced by the checked address (the Host header keeps the name)."""
    parts = urlsplit(checked.url)
    address = f"[{checked.address}]" if ":" in checked.address else checked.address
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]


async def _read(response: httpx2.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise OutboundRefused(f"the file is larger than {max_bytes} bytes")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise OutboundRefused(f"the file is larger than {max_bytes} bytes")
    return bytes(data)


def _content_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
