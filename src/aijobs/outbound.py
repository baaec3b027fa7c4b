"""The outbound URL guard: every URL the service fetches on a user's behalf goes through here.

A user who can make the service fetch a URL could otherwise reach what only the service can: its
Redis, the cloud metadata endpoint, an admin port on the private network. So a URL must be http(s)
and at most :data:`MAX_URL_LENGTH` characters; its host is resolved and *every* address must be
public (:func:`refusal` says what is not). The connection then goes to the address that was
checked, so a DNS answer that changes between check and connect (rebinding) cannot slip through,
and redirects are followed by hand, each one checked again. A URL the HTTP client cannot send
(malformed, an unsupported scheme, a header it refuses) is an :class:`OutboundRefused` too, never
an error of the service's own.

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
#: The longest URL the service calls (``data:`` URLs are never called, so never counted here).
#: RFC 9110 asks for request lines of at least 8,000 octets and common servers stop near there
#: (nginx's 8 KiB header buffers, Apache's 8,190-byte request line), so a longer URL could seldom be
#: fetched anyway; signed object-store URLs (S3 with a session token, GCS, Azure SAS) stay under 4 KiB.
MAX_URL_LENGTH = 8_192
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Names already resolved during one check of many URLs (a batch file): name → addresses (none:
#: it did not resolve). Owned by the caller and dropped with the request.
Names = dict[str, list[IPAddress]]
#: What the HTTP client raises for a URL or request it cannot send, or a response it cannot read.
_CLIENT_ERRORS = (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError, httpx2.CookieConflict, ValueError)


class OutboundRefused(Exception):
    """The URL may not be fetched; the message says why (safe to show the caller)."""


def _table(*rows: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in rows)


#: The IANA IPv4 Special-Purpose Address Registry, whole, and multicast. Even the few blocks the
#: registry calls globally reachable (anycast relays, AS112 sinks) are refused: nothing the service
#: fetches lives there. Python's own ``is_global`` is not used: it differs between versions
#: (3.11 passes 192.0.0.8, the AS112 and AMT blocks).
_REFUSED_V4 = _table(
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private-use"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
#: Only global unicast is called; inside it, the IANA IPv6 Special-Purpose Address Registry's
#: blocks (all of 2001::/23, Teredo's 2001::/32 and the few globally reachable anycast blocks
#: included: nothing the service fetches lives there).
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_REFUSED_V6 = _table(
    ("2001:db8::/32", "documentation"),
    ("2001::/32", "Teredo"),
    ("2001::/23", "IETF protocol assignments"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
)
#: Outside global unicast everything is refused; these names only make the message say what it is.
_OUTSIDE_V6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use NAT64"),  # which bits carry the IPv4 address is the operator's choice
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be called (a few words), or ``None`` when it is public.

    The IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
    (``::ffff:a.b.c.d``), NAT64's well-known prefix (``64:ff9b::a.b.c.d``) and 6to4
    (``2002:AABB:CCDD::``); Teredo, IPv4-compatible and local-use NAT64 are refused whole.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _label(address, _REFUSED_V4)
    address = ipaddress.IPv6Address(address.packed)  # without any %zone
    embedded = _embedded_v4(address)
    if embedded is not None:
        form, v4 = embedded
        why = refusal(v4)
        return f"{why}, as the {form} form of {v4}" if why else None
    if address in _GLOBAL_UNICAST:
        return _label(address, _REFUSED_V6)
    return _label(address, _OUTSIDE_V6) or "reserved"


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def _label(
    address: IPAddress, table: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]
) -> str | None:
    return next((label for network, label in table if address in network), None)


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

    async def check(self, url: str, *, names: Names | None = None) -> Checked:
        """Resolve and check ``url``; :class:`OutboundRefused` when it must not be fetched.

        ``names`` (when many URLs are checked at once) keeps each host's resolution for the rest.
        """
        if len(url) > MAX_URL_LENGTH:
            raise OutboundRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
        try:
            httpx2.URL(url)  # what the client could not send is refused here, not when it is sent
            return await self._check(url, names)
        except (ValueError, httpx2.InvalidURL):  # UnicodeError included: an over-long IDNA label
            raise OutboundRefused("the URL is malformed") from None

    async def _check(self, url: str, names: Names | None) -> Checked:
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
        addresses = await _resolve(host, port, names)
        if self._allowed(host, addresses):
            return Checked(url, host, str(addresses[0]))
        for address in addresses:
            if why := refusal(address):
                raise OutboundRefused(f"{host} resolves to a non-public address ({why}); it cannot be called")
        return Checked(url, host, str(addresses[0]))

    async def fetch(
        self, http: httpx2.AsyncClient, url: str, *, max_bytes: int, timeout_s: float = 30.0
    ) -> tuple[bytes, str]:
        """GET ``url`` through the guard: ``(body, content type)``; at most ``max_bytes``.

        Redirects are followed by hand (at most 3), each target checked; any failure is an
        :class:`OutboundRefused` whose message is safe to show.
        """
        for hop in range(MAX_REDIRECTS + 1):
            try:
                checked = await self.check(url)
            except OutboundRefused as exc:
                if hop == 0:
                    raise
                raise OutboundRefused(f"the URL redirects to one that cannot be fetched: {exc}") from None
            try:
                async with http.stream(
                    "GET", _pinned(checked), headers={"Host": _host_header(checked.url)},
                    extensions={"sni_hostname": checked.host}, follow_redirects=False, timeout=timeout_s,
                ) as response:  # fmt: skip
                    if response.is_redirect and "location" in response.headers:
                        url = _redirect(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise OutboundRefused(f"fetching the URL failed: HTTP {response.status_code}")
                    return await _read(response, max_bytes), _content_type(response)
            except _CLIENT_ERRORS as exc:
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

        :class:`OutboundRefused` when the URL may not be called (or the client cannot send it);
        httpx2's transport errors (and ``TimeoutError`` after ``timeout_s`` in all) when the call
        fails. At most ``MAX_RESPONSE_BYTES`` of the answer are read.
        """
        async with asyncio.timeout(timeout_s):  # resolving the name counts against the total too
            checked = await self.check(url)
        timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
        try:
            async with asyncio.timeout(timeout_s), http.stream(
                "POST", _pinned(checked), content=content,
                headers={**headers, "Host": _host_header(checked.url)},
                extensions={"sni_hostname": checked.host}, follow_redirects=False, timeout=timeout,
            ) as response:  # fmt: skip
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break
                return Sent(response.status_code, response.headers.get("retry-after"))
        except (httpx2.InvalidURL, httpx2.UnsupportedProtocol, httpx2.LocalProtocolError) as exc:
            raise OutboundRefused(f"the URL cannot be called: {type(exc).__name__}") from None


@dataclass(frozen=True, slots=True)
class Sent:
    """What a POST through the guard got back: the status and any ``Retry-After``."""

    status_code: int
    retry_after: str | None


async def _resolve(host: str, port: int, names: Names | None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if names is not None and host in names:
        addresses = names[host]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        addresses = list(dict.fromkeys(found))
        if names is not None:
            names[host] = addresses
    if not addresses:
        raise OutboundRefused(f"the host {host} does not resolve")
    return addresses


def _redirect(url: str, location: str) -> str:
    """Where a redirect from ``url`` to ``location`` goes; checked again before it is fetched."""
    if len(location) > MAX_URL_LENGTH:
        raise OutboundRefused(f"the URL redirects to one longer than {MAX_URL_LENGTH} characters")
    try:
        return str(httpx2.URL(url).join(location))
    except (httpx2.InvalidURL, ValueError):
        raise OutboundRefused("the URL redirects to a malformed URL") from None


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
