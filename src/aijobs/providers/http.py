"""The HTTP side of every network adapter: one call, and every way it can fail mapped to our errors.

::

    post_json(...)            → the decoded JSON body of a 2xx answer, or raises:
    ├── httpx2.ConnectTimeout, ReadTimeout, … → ProviderTimeout
    ├── other transport errors (refused, reset) → ProviderUnavailable
    ├── status ≥ 400                            → error_for(status, body, headers)
    ├── a 2xx body that is not JSON             → ProviderBadResponse
    └── a 2xx body that carries an error        → error_for(...) (MiniMax ``base_resp``, Ark ``error``)

``error_for`` reads the status first and the provider's error body second: a 400 whose body says the
prompt is too long is a context-window error, one that names a content policy is a content filter.
It reads error bodies in the shapes providers use (``{"error": {...}}``, ``{"message": ...}``,
``base_resp``), never by provider name. Error text is truncated and scrubbed of keys before it is
kept anywhere (:func:`aijobs.errors.scrub`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx2
import orjson

from aijobs import errors
from aijobs.errors import ProviderError

_CONTEXT_HINTS = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens|"
    r"exceeds the maximum number of tokens|input token count|reduce the length",
    re.IGNORECASE,
)
_POLICY_HINTS = re.compile(
    r"content[_ ]?(policy|filter|management|moderat)|safety|sensitive|data_inspection_failed|"
    r"inappropriate|flagged|filtered",
    re.IGNORECASE,
)
_QUOTA_HINTS = re.compile(
    r"insufficient_quota|insufficient balance|exceeded your current quota", re.IGNORECASE
)

#: MiniMax ``base_resp.status_code`` values, as the HTTP status they amount to.
_MINIMAX_STATUS = {1002: 429, 1004: 401, 1008: 402, 1026: 400, 1027: 400, 2013: 400, 2049: 401}

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


def timeout(connect_s: float, read_s: float) -> httpx2.Timeout:
    """Explicit connect and read timeouts; the whole attempt is bounded by the Router."""
    return httpx2.Timeout(read_s, connect=connect_s)


async def post_json(
    client: httpx2.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    provider: str,
    model: str,
    timeouts: httpx2.Timeout,
) -> Any:
    """POST ``body`` as JSON and return the decoded answer, or raise a :class:`ProviderError`."""
    try:
        response = await client.post(url, content=orjson.dumps(body), headers=headers, timeout=timeouts)
    except httpx2.TimeoutException as exc:
        raise errors.ProviderTimeout(
            f"{provider} did not answer in time ({type(exc).__name__})", provider=provider, model=model
        ) from None
    except httpx2.TransportError as exc:
        raise errors.ProviderUnavailable(
            f"could not reach {provider}: {type(exc).__name__}", provider=provider, model=model
        ) from None
    if response.status_code >= 400:
        raise error_for(response.status_code, response.content, response.headers, provider, model)
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise errors.ProviderBadResponse(
            f"{provider} answered {response.status_code} with a body that is not JSON",
            provider=provider, model=model, status=response.status_code, body=response.text,
        ) from None  # fmt: skip
    embedded = embedded_error(data)
    if embedded is not None:
        raise error_for(embedded, response.content, response.headers, provider, model)
    return data


def embedded_error(data: Any) -> int | None:
    """The HTTP status a 2xx body's own error amounts to, or ``None`` when it carries none."""
    if not isinstance(data, dict):
        return None
    base = data.get("base_resp")
    if isinstance(base, dict) and base.get("status_code") not in (None, 0):
        return _MINIMAX_STATUS.get(int(base["status_code"]), 400)
    if isinstance(data.get("error"), dict) and "choices" not in data and "data" not in data:
        return 400
    return None


def error_details(body: bytes) -> tuple[str, str]:
    """``(message, code)`` from an error body in any of the shapes providers use."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:300], ""
    if not isinstance(data, dict):
        return str(data)[:300], ""
    inner: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else data
    base: dict[str, Any] = data["base_resp"] if isinstance(data.get("base_resp"), dict) else {}
    detail = data.get("detail")  # FastAPI-style services (Jina, Voyage)
    message = inner.get("message") or base.get("status_msg") or data.get("message") or detail or ""
    code = inner.get("code") or inner.get("type") or inner.get("status") or base.get("status_code") or ""
    return str(message), str(code)


def error_for(
    status: int, body: bytes, headers: Mapping[str, str], provider: str, model: str
) -> ProviderError:
    """The error an answer with ``status`` and this error ``body`` means."""
    message, code = error_details(body)
    hint = f"{code} {message}"
    cls: type[ProviderError]
    if _CONTEXT_HINTS.search(hint):
        cls = errors.ProviderContextWindow
    elif _POLICY_HINTS.search(hint) and status < 500:
        cls = errors.ProviderContentFiltered
    elif _QUOTA_HINTS.search(hint):
        cls = errors.ProviderAuth  # out of credit: retrying will not help, another provider may
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = errors.ProviderUnavailable
    else:
        cls = errors.ProviderRejected
    text = errors.scrub(message or f"HTTP {status}", limit=300)
    return cls(
        f"{provider} {model}: {status} {code + ': ' if code else ''}{text}",
        provider=provider, model=model, status=status, retry_after_s=retry_after_s(headers),
        body=body.decode("utf-8", "replace"),
    )  # fmt: skip


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def retry_after_s(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """How long the provider asked us to wait, from the headers it uses, capped at an hour.

    ``retry-after-ms``; ``Retry-After`` as seconds or an HTTP date; else the soonest rate-limit
    reset (OpenAI's ``x-ratelimit-reset-*`` durations such as ``6m0s``, Anthropic's
    ``anthropic-ratelimit-*-reset`` timestamps) when that limit is exhausted.
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
    resets = [_duration(v) for k, v in lower.items() if k.startswith("x-ratelimit-reset")]
    resets += [
        _timestamp(v, now)
        for k, v in lower.items()
        if k.startswith("anthropic-ratelimit") and k.endswith("reset")
    ]
    found = [r for r in resets if r is not None]
    return _cap(min(found)) if found else None


def _number(text: str, scale: float = 1.0) -> float | None:
    try:
        return float(text) * scale
    except ValueError:
        return None


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
    if seconds is None:
        return None
    return round(min(max(seconds, 0.0), MAX_RETRY_AFTER_S), 3)
