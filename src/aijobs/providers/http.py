"""The HTTP side of every network adapter: one call, and every way it can fail mapped to our errors.

::

    post_json(...)            → the decoded JSON body of a 2xx answer, or raises:
    ├── a request no client can send (URL too long or with a control character, no host, a bad
    │   port, a scheme other than http(s), a header with a newline)  → ProviderRejected, never
    │   retried: nothing left this process, so nothing happened upstream
    ├── httpx2.TimeoutException                 → ProviderTimeout
    ├── other request errors (refused, reset,
    │   undecodable content)                    → ProviderUnavailable
    ├── status ≥ 400                            → error_for(status, body, headers)
    ├── a 2xx body that is not JSON             → ProviderBadResponse
    └── a 2xx body that carries an error        → error_for(...) (MiniMax ``base_resp``, Ark ``error``)

``error_for`` reads the status and the provider's error body, in whichever shape the provider uses
(``{"error": {...}}``, ``{"message"}``, ``{"detail"}``, ``base_resp``, Google's ``details[].reason``),
never the provider's name. What the body says can overrule the status: a 400 that says the prompt
is too long is a context-window error, one that names a content policy is a content filter, a bad
key is an auth error whatever its status, and an exhausted balance is a billing (auth) error.

Error text is truncated, and the provider's key (whatever its shape) plus anything key-like is
scrubbed out before it is kept anywhere.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx2
import orjson

from aijobs import errors
from aijobs.errors import ProviderError
from aijobs.providers.base import ProviderContext
from aijobs.providers.transport import exchange

_CONTEXT_HINTS = re.compile(
    r"context[_ ]length|context window|context limit|maximum context|prompt is too long|too many tokens|"
    r"exceeds the maximum number of tokens|input token count|reduce the length",
    re.IGNORECASE,
)
_POLICY_HINTS = re.compile(
    r"content[_ ]?(policy|filter|management|moderat)|safety|sensitive|data_?inspection_?failed|"
    r"inappropriate|flagged|filtered|"
    r"^102[67]\b",  # MiniMax base_resp: sensitive input / output, whatever the message says
    re.IGNORECASE,
)
_AUTH_HINTS = re.compile(
    r"api[ _]key not valid|api_key_invalid|invalid[ _]api[ _]key|incorrect api key|invalidapikey|"
    r"authentication[_ ](error|fails|failed)",
    re.IGNORECASE,
)
#: Out of credit: retrying will not help, another provider may. (Gemini says "exceeded your current
#: quota" for per-minute limits too, so that phrase alone is not billing.)
_BILLING_HINTS = re.compile(
    r"insufficient_quota|insufficient[ _]balance|credit balance is too low|arrearage|"
    r"exceeded_current_quota|billing",
    re.IGNORECASE,
)

#: MiniMax ``base_resp.status_code`` values, as the HTTP status they amount to; others count as 500.
_MINIMAX_STATUS = {1001: 504, 1002: 429, 1004: 401, 1008: 402, 1026: 400, 1027: 400, 1039: 429, 2013: 400}
_MINIMAX_STATUS |= {2049: 401}

_BY_STATUS: dict[int, type[ProviderError]] = {
    401: errors.ProviderAuth,
    402: errors.ProviderAuth,  # billing: this account cannot pay, another provider may
    403: errors.ProviderAuth,
    404: errors.ProviderModelNotFound,
    408: errors.ProviderTimeout,
    413: errors.ProviderContextWindow,
    429: errors.ProviderRateLimited,
    504: errors.ProviderTimeout,
}
MAX_RETRY_AFTER_S = 3600.0


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: answers' optional blocks can be null."""
    return value if isinstance(value, dict) else {}


def timeouts_for(context: ProviderContext) -> httpx2.Timeout:
    """The provider's explicit connect and read timeouts; the whole attempt is bounded by the Router."""
    return httpx2.Timeout(context.config.read_timeout_s, connect=context.config.connect_timeout_s)


def json_headers(
    context: ProviderContext, key_header: str = "Authorization", key_prefix: str = "Bearer ", **extra: str
) -> dict[str, str]:
    """JSON request headers carrying the provider's key (when it has one) the way it wants it."""
    headers = {"Content-Type": "application/json", **extra}
    if context.api_key:
        headers[key_header] = key_prefix + context.api_key
    return headers


#: Failures that happen before a request is sent: repeating the request cannot do it twice.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
#: What httpx2, or the transport under it, raises for a request it cannot build or send at all (an
#: over-long URL, a control character, a bad port, no host, a header with a newline; ``ValueError``
#: covers what the URL and header parsers raise unwrapped). Nothing was sent.
_UNSENDABLE = (httpx2.InvalidURL, httpx2.UnsupportedProtocol, httpx2.LocalProtocolError, ValueError)
_SCHEMES = frozenset({"http", "https"})


def unsendable(provider: str, model: str, why: str) -> errors.ProviderRejected:
    """The error of a request that could not be sent: the same every time, so never retried."""
    return errors.ProviderRejected(
        f"{provider} {model}: the request could not be sent ({errors.scrub(why, limit=200)})",
        provider=provider, model=model,
    )  # fmt: skip


def check_url(url: str, provider: str, model: str) -> None:
    """Raise :func:`unsendable` for a URL no HTTP client can send (checked before sending, so that
    every transport refuses the same URLs the same way)."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise unsendable(provider, model, f"invalid URL: {exc}") from None
    if parsed.scheme not in _SCHEMES:
        raise unsendable(provider, model, f"the URL's scheme {parsed.scheme!r} is not http or https")
    if not parsed.host:
        raise unsendable(provider, model, "the URL names no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise unsendable(provider, model, f"the URL's port {parsed.port} is out of range")


@contextlib.contextmanager
def transport_errors(
    provider: str, model: str, *, submit: bool = False, url: str | None = None
) -> Iterator[None]:
    """Turn a transport failure (no answer in time, no connection) into a provider error.

    With ``submit`` (a long-running task's create call), a failure after the request went out is a
    :class:`~aijobs.errors.SubmitUnknown`: the task may exist upstream. ``url`` is checked first
    (:func:`check_url`); a request that cannot be sent at all is a :func:`unsendable` error.
    """
    if url is not None:
        check_url(url, provider, model)
    try:
        yield
    except _UNSENDABLE as exc:
        raise unsendable(provider, model, f"{type(exc).__name__}: {exc}") from None
    except httpx2.RequestError as exc:
        if submit and not isinstance(exc, _NOT_SENT):
            raise errors.SubmitUnknown(
                f"{provider} did not answer the submit ({type(exc).__name__}); the task may exist upstream",
                provider=provider, model=model,
            ) from None  # fmt: skip
        if isinstance(exc, httpx2.TimeoutException):
            raise errors.ProviderTimeout(
                f"{provider} did not answer in time ({type(exc).__name__})", provider=provider, model=model
            ) from None
        raise errors.ProviderUnavailable(
            f"could not reach {provider}: {type(exc).__name__}", provider=provider, model=model
        ) from None


async def post_json(
    context: ProviderContext,
    url: str,
    body: Mapping[str, Any],
    *,
    model: str,
    headers: Mapping[str, str],
    timeouts: httpx2.Timeout,
) -> Any:
    """POST ``body`` as JSON and return the decoded answer, or raise a :class:`ProviderError`."""
    return await request_json(context, "POST", url, body, model=model, headers=headers, timeouts=timeouts)


async def request_json(
    context: ProviderContext,
    method: str,
    url: str,
    body: Mapping[str, Any] | None = None,
    *,
    model: str,
    headers: Mapping[str, str],
    timeouts: httpx2.Timeout,
    submit: bool = False,
    embedded: bool = True,
) -> Any:
    """Send ``body`` (if any) as JSON with ``method``; the decoded answer, or a :class:`ProviderError`.

    ``submit`` marks a long-running task's create call (see :func:`transport_errors`). With
    ``embedded=False`` an ``error`` inside a 2xx body is left to the caller: a task record carries
    its own failure that way, and that is the task's outcome, not a failed call.
    """
    provider = context.name
    content = orjson.dumps(body) if body is not None else None
    with transport_errors(provider, model, submit=submit, url=url):
        response = await exchange(
            context.http, method, url, content=content, headers=headers, timeouts=timeouts
        )
    if response.status_code >= 400:
        raise error_for(
            response.status_code, response.content, response.headers, provider, model, context.api_key
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise errors.ProviderBadResponse(
            f"{provider} answered {response.status_code} with a body that is not JSON",
            provider=provider, model=model, status=response.status_code,
            body=_redact(response.text, context.api_key),
        ) from None  # fmt: skip
    found = embedded_error(data) if embedded else None
    if found is not None:
        raise error_for(found, response.content, response.headers, provider, model, context.api_key)
    return data


async def post_for_bytes(
    context: ProviderContext,
    url: str,
    body: Mapping[str, Any],
    *,
    model: str,
    headers: Mapping[str, str],
    timeouts: httpx2.Timeout,
    max_bytes: int,
) -> tuple[bytes, str]:
    """POST ``body`` as JSON to an endpoint that answers with a file (speech); ``(bytes, content type)``.

    The body is read in chunks and refused past ``max_bytes``; an error answer is mapped as usual.
    """
    provider = context.name
    with transport_errors(provider, model, url=url):
        async with context.http.stream(
            "POST", url, content=orjson.dumps(body), headers=headers, timeout=timeouts
        ) as response:
            if response.status_code >= 400:
                content = await response.aread()
                raise error_for(
                    response.status_code, content, response.headers, provider, model, context.api_key
                )
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise errors.ProviderBadResponse(
                        f"{provider} {model}: the answer is larger than {max_bytes} bytes",
                        provider=provider, model=model, status=response.status_code,
                    )  # fmt: skip
            content_type = response.headers.get("content-type", "application/octet-stream")
    return bytes(data), content_type.split(";")[0].strip()


def embedded_error(data: Any) -> int | None:
    """The HTTP status a 2xx body's own error amounts to, or ``None`` when it carries none."""
    if not isinstance(data, dict):
        return None
    base = data.get("base_resp")
    if isinstance(base, dict) and base.get("status_code") not in (None, 0, "0"):
        try:
            return _MINIMAX_STATUS.get(int(base["status_code"]), 500)
        except (TypeError, ValueError):
            return 500
    if isinstance(data.get("error"), dict) and "choices" not in data and "data" not in data:
        return 400
    return None


def error_details(body: bytes) -> tuple[str, str, str]:
    """``(message, code, hints)`` from an error body in any of the shapes providers use.

    ``hints`` joins every code-like string the body carries (code, type, status, Google's
    ``details[].reason``) with the message, for recognising what kind of error it is.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")[:300]
        return text, "", text
    if not isinstance(data, dict):
        return str(data)[:300], "", str(data)[:300]
    inner: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else data
    base: dict[str, Any] = data["base_resp"] if isinstance(data.get("base_resp"), dict) else {}
    detail = data.get("detail") if isinstance(data.get("detail"), str) else ""  # FastAPI-style (Jina, Voyage)
    message = str(inner.get("message") or base.get("status_msg") or data.get("message") or detail or "")
    codes = [str(inner[k]) for k in ("code", "type", "status") if inner.get(k) not in (None, "")]
    codes += [str(base["status_code"])] if "status_code" in base else []
    details: list[Any] = inner["details"] if isinstance(inner.get("details"), list) else []
    codes += [str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")]
    code = next((c for c in codes if not c.isdigit()), codes[0] if codes else "")
    return message, code, " ".join([*codes, message])


def error_for(
    status: int, body: bytes, headers: Mapping[str, str], provider: str, model: str, secret: str | None = None
) -> ProviderError:
    """The error an answer with ``status`` and this error ``body`` means."""
    message, code, hints = error_details(body)
    cls: type[ProviderError]
    if _AUTH_HINTS.search(hints) or _BILLING_HINTS.search(hints):
        cls = errors.ProviderAuth
    elif _CONTEXT_HINTS.search(hints):
        cls = errors.ProviderContextWindow
    elif _POLICY_HINTS.search(hints) and status < 500:
        cls = errors.ProviderContentFiltered
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = errors.ProviderUnavailable
    else:
        cls = errors.ProviderRejected
    text = _redact(f"{code + ': ' if code else ''}{message or f'HTTP {status}'}", secret)
    wait_s = (
        retry_after_s(headers) if status in (429, 503, 529) or cls is errors.ProviderRateLimited else None
    )
    if wait_s is None and cls is errors.ProviderRateLimited:
        wait_s = _google_retry_delay(body)
    return cls(
        f"{provider} {model}: {status} {errors.scrub(text, limit=300)}",
        provider=provider, model=model, status=status, retry_after_s=wait_s,
        body=_redact(body.decode("utf-8", "replace"), secret),
    )  # fmt: skip


def _redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` in it, whatever the key looks like (scrub() only knows common shapes)."""
    return text.replace(secret, "[redacted]") if secret and len(secret) >= 6 else text


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def retry_after_s(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """How long the provider asked us to wait, from the headers it uses, capped at an hour.

    ``retry-after-ms``; ``Retry-After`` as seconds or an HTTP date; else the reset of the limit that
    is exhausted (``x-ratelimit-remaining-X: 0`` → ``x-ratelimit-reset-X`` as a duration like
    ``6m0s``; ``anthropic-ratelimit-X-remaining: 0`` → ``anthropic-ratelimit-X-reset`` timestamp).
    """
    now = time.time() if now_s is None else now_s
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        return _cap(_number(lower["retry-after-ms"], scale=0.001))
    if "retry-after" in lower:
        value = lower["retry-after"].strip()
        seconds = _number(value)
        if seconds is None:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError):
                seconds = None
        return _cap(seconds)
    resets = []
    for name, value in lower.items():
        if name.startswith("x-ratelimit-reset-"):
            limit = name.removeprefix("x-ratelimit-reset-")
            if lower.get(f"x-ratelimit-remaining-{limit}", "").strip() == "0":
                resets.append(_duration(value))
        elif name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            limit = name.removeprefix("anthropic-ratelimit-").removesuffix("-reset")
            if lower.get(f"anthropic-ratelimit-{limit}-remaining", "").strip() == "0":
                resets.append(_timestamp(value, now))
    found = [r for r in resets if r is not None]
    return _cap(max(found)) if found else None  # wait for every exhausted limit


def _google_retry_delay(body: bytes) -> float | None:
    """Google's ``RetryInfo`` detail (``"retryDelay": "30s"``) in a 429 body."""
    try:
        data = orjson.loads(body)
        details = data["error"]["details"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            return _cap(_duration(detail["retryDelay"]))
    return None


def _number(text: str, scale: float = 1.0) -> float | None:
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _duration(text: str) -> float | None:
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        return _number(text)
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _timestamp(text: str, now: float) -> float | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp() - now
    except ValueError:
        return None


def _cap(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(min(max(seconds, 0.0), MAX_RETRY_AFTER_S), 3)
