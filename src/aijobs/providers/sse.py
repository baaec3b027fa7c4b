"""Server-sent events from an upstream: ``stream_json`` POSTs a body and yields each event's JSON.

Streaming adapters hand each piece of the answer to ``on_delta`` as it arrives: that is how the
Router enforces a time-to-first-token timeout and how ``/v1/chat/completions`` streams to its
caller. Adapters also assemble the events into the same wire shape their non-streamed answer has,
so one parser serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx2
import orjson

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import ProviderContext
from aijobs.types.chat import ChatDelta

#: Called by a streaming adapter with each piece of the answer (text, reasoning or a tool call) as
#: it arrives; the first call is the first token.
OnDelta = Callable[[ChatDelta], None]
MAX_ERROR_BODY_BYTES = 64 * 1024


async def stream_json(
    context: ProviderContext,
    url: str,
    body: Mapping[str, Any],
    *,
    model: str,
    headers: Mapping[str, str],
    timeouts: httpx2.Timeout,
) -> AsyncIterator[Any]:
    """POST ``body`` and yield the JSON of each ``data:`` event until ``[DONE]`` or the stream ends.

    Errors are the same :class:`~aijobs.errors.ProviderError` classes :func:`http.post_json` raises,
    whether the upstream refuses the request or puts an error in an event.
    """
    provider = context.name
    request = context.http.build_request(
        "POST",
        url,
        content=orjson.dumps(body),
        headers={**headers, "accept": "text/event-stream"},
        timeout=timeouts,
    )
    with http.transport_errors(provider, model):
        response = await context.http.send(request, stream=True)
    try:
        if response.status_code >= 400:
            content = await _read_some(response)
            raise http.error_for(
                response.status_code, content, response.headers, provider, model, context.api_key
            )
        async for data in _events(response, provider, model):
            if data == b"[DONE]":
                return
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise errors.ProviderBadResponse(
                    f"{provider} streamed an event that is not JSON",
                    provider=provider,
                    model=model,
                    status=200,
                ) from None
            embedded = http.embedded_error(event)
            if embedded is not None:
                raise http.error_for(embedded, data, response.headers, provider, model, context.api_key)
            yield event
    finally:
        await response.aclose()


async def _events(response: httpx2.Response, provider: str, model: str) -> AsyncIterator[bytes]:
    """The ``data`` of each event; multi-line data is joined with newlines, as the SSE spec says."""
    lines: list[bytes] = []
    with http.transport_errors(provider, model):  # mid-stream: a stall or a dropped connection
        async for line in response.aiter_lines():
            if not line:
                if lines:
                    yield b"\n".join(lines)
                    lines = []
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" ").encode())
    if lines:
        yield b"\n".join(lines)


async def _read_some(response: httpx2.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY_BYTES:
            break
    return body[:MAX_ERROR_BODY_BYTES]
