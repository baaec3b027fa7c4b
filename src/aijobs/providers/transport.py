"""The upstream client: httpx2's interface over aiohttp's connection pool.

Adapters speak httpx2 (requests, responses, timeouts, the error tree ``http.transport_errors``
maps). Under it, httpcore2 over anyio cost about 1 ms of CPU per call, more than the rest of a
gateway call put together; aiohttp's pool does the same exchange in under 0.2 ms. So httpx2 keeps
the interface and :class:`AiohttpTransport` moves the bytes, raising httpx2's errors::

    aiohttp error                               → httpx2 error (what the caller can conclude)
    ├── ConnectionTimeoutError                  → ConnectTimeout   (nothing was sent)
    ├── ClientConnectorError (refused, DNS)     → ConnectError     (nothing was sent)
    ├── SocketTimeoutError, asyncio timeout     → ReadTimeout      (sent; no answer in time)
    ├── ServerDisconnectedError, payload errors → RemoteProtocolError
    ├── other ClientOSError                     → ReadError
    └── InvalidURL                              → UnsupportedProtocol

httpx2 still follows redirects, decodes ``Content-Encoding`` and applies its timeouts' values; the
transport neither redirects nor decompresses, so nothing is done twice.

A whole-body exchange (every JSON call) can skip httpx2's request and response models too:
:func:`exchange` sends it straight to the pool of an :class:`Upstream` client, with the same
errors, and answers an :class:`Answer` (status, headers, body).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

import aiohttp
import httpx2
import yarl

#: Idle connections are closed after this long (providers' load balancers drop them at 60-350 s).
KEEPALIVE_S = 30.0
_CHUNK_BYTES = 64 * 1024


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests over one aiohttp connection pool (created on first use, in the loop)."""

    def __init__(self, max_connections: int = 1000, trust: ssl.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._trust = trust  # certificates to trust; None: the system's store
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_S,
                ssl=self._trust or True,
            )
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()  # a streamed body is read whole, so it goes with a Content-Length
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() != b"transfer-encoding"
        ]
        with _mapped(request):
            response = await self._open().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # as httpx2 encoded it: signed URLs stay intact
                headers=headers,
                data=body or None,
                timeout=_client_timeout(request.extensions.get("timeout") or {}),
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                proxy=_proxy(request.url.scheme, request.url.host),
                # The outbound guard pins a checked address in the URL and names the host for TLS.
                server_hostname=request.extensions.get("sni_hostname"),
            )
        return httpx2.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def exchange(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str],
        timeouts: httpx2.Timeout,
    ) -> Answer:
        """Send one request and read its whole answer (decompressed), with httpx2's errors."""
        parsed = yarl.URL(url, encoded="%" in url)  # escapes in an adapter's URL are meant as written
        with _mapped(None):
            async with self._open().request(
                method,
                parsed,
                headers=headers,
                data=content,
                timeout=_client_timeout(timeouts.as_dict()),
                allow_redirects=False,
                proxy=_proxy(parsed.scheme, parsed.host or ""),
            ) as response:
                return Answer(response.status, response.headers, await response.read())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: what JSON calls read of a response."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _client_timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx2's timeouts as aiohttp's: the whole exchange is bounded by the Router, not here."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=timeout.get("pool"),
        sock_connect=timeout.get("connect"),
        sock_read=timeout.get("read"),
    )


@functools.lru_cache(maxsize=256)
def _proxy(scheme: str, host: str) -> str | None:
    """The proxy ``HTTP(S)_PROXY`` names for ``host`` unless ``NO_PROXY`` exempts it, as httpx2's own
    transport honoured them (read here once per host: aiohttp's ``trust_env`` asks a thread each call)."""
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]  # public, unstubbed
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(scheme) or proxies.get("all")


class _Body(httpx2.AsyncByteStream):
    """A response body read from aiohttp as httpx2 asks for it; closing it frees the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


@contextlib.contextmanager
def _mapped(request: httpx2.Request | None) -> Iterator[None]:
    """aiohttp's errors as httpx2's (see the module docstring)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except ValueError as exc:  # a header aiohttp refuses to send (a key with a newline in it, say)
        raise httpx2.LocalProtocolError(str(exc), request=request) from exc


class Upstream(httpx2.AsyncClient):
    """httpx2's client over an :class:`AiohttpTransport`, whose pool :func:`exchange` can use directly."""

    def __init__(self, max_connections: int = 1000, trust: ssl.SSLContext | None = None) -> None:
        self.pool = AiohttpTransport(max_connections, trust)
        super().__init__(timeout=httpx2.Timeout(60.0, connect=5.0), transport=self.pool)


def upstream_client(max_connections: int = 1000) -> Upstream:
    """The client adapters call providers with (its timeouts are each provider's own, per call)."""
    return Upstream(max_connections)


async def exchange(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None,
    headers: Mapping[str, str],
    timeouts: httpx2.Timeout,
) -> Answer:
    """One request and its whole answer: straight to the pool of an :class:`Upstream`, else through
    ``client`` (tests build adapters on a plain httpx2 client). Errors are httpx2's either way."""
    if isinstance(client, Upstream):
        return await client.pool.exchange(method, url, content, headers, timeouts)
    response = await client.request(method, url, content=content, headers=headers, timeout=timeouts)
    return Answer(response.status_code, response.headers, response.content)
