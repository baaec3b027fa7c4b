"""A zero-latency upstream speaking OpenAI's chat completions (whole and streamed), for ``make bench``.

It answers from prepared bytes on raw asyncio connections (uvloop), so what (g) measures is aijobs,
not the fake. A request with ``"stream": true`` gets three content chunks, a usage chunk and
``[DONE]``.  ``python -m bench.openai_fake PORT``
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import orjson
import uvloop

_COMPLETION = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the fake upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
})  # fmt: skip


def _chunk(delta: dict[str, str], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
             "choices": choices, "usage": usage}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


_STREAM = b"".join([
    _chunk({"role": "assistant", "content": "Hello "}), _chunk({"content": "from the "}),
    _chunk({"content": "fake upstream."}), _chunk({}, "stop"),
    _chunk({}, usage={"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}), b"data: [DONE]\n\n",
])  # fmt: skip


def _response(body: bytes, content_type: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


WHOLE = _response(_COMPLETION, b"application/json")
STREAMED = _response(_STREAM, b"text/event-stream")


class Upstream(asyncio.Protocol):
    """Reads requests by Content-Length and answers each at once (keep-alive, pipelining-safe)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(STREAMED if b'"stream":true' in body.replace(b" ", b"") else WHOLE)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
