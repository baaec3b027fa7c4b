"""Batch input files checked line by line: every problem named with its line and field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aijobs.api.openai.batchfile import MAX_REPORTED, check

CHAT = {"model": "background", "messages": [{"role": "user", "content": "hi"}]}


def line(custom_id: str = "a", url: str = "/v1/chat/completions", **extra: Any) -> bytes:
    body = extra.pop("body", CHAT)
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra})


async def chunked(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):  # lines split across chunks, as uploads arrive
        yield data[start : start + size]


async def test_a_good_file_counts_its_requests_whatever_its_line_endings() -> None:
    data = line("a") + b"\r\n" + line("b") + b"\n\n" + line("c")  # CRLF, a blank line, no final newline
    checked = await check(chunked(data), max_lines=10, max_line_bytes=4096)
    assert (checked.lines, checked.endpoint, checked.errors) == (3, "/v1/chat/completions", [])


BAD_LINES = [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (line(extra_field=1), "extra_field", "unknown field"),
    (line(""), "custom_id", "1 to 64"),
    (line("x" * 65), "custom_id", "1 to 64"),
    (
        orjson.dumps({"custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {}}),
        "method",
        "POST",
    ),
    (line(url="/v1/images/generations"), "url", "must be one of"),
    (line(body=[]), "body", "JSON object"),
    (line(body={**CHAT, "stream": True}), "body.stream", "cannot stream"),
    (line(body={"model": "background", "messages": []}), "body.messages", "at least 1"),
    (line(body={**CHAT, "logit_bias": {}}), "body.logit_bias", None),
    (
        line(url="/v1/embeddings", body={"model": "search", "input": ""}),
        "body.input",
        None,
    ),  # the job's check
    (
        line(url="/v1/rerank", body={"model": "r", "query": "q", "documents": ["d"], "top_n": 0}),
        "body.top_n",
        None,
    ),
]


@pytest.mark.parametrize(("raw", "param", "says"), BAD_LINES)
async def test_each_bad_line_is_named(raw: bytes, param: str | None, says: str | None) -> None:
    data = line("ok") + b"\n" + raw + b"\n"
    checked = await check(chunked(data), max_lines=10, max_line_bytes=4096)
    assert len(checked.errors) == 1, checked.errors
    error = checked.errors[0]
    assert (error.line, error.param) == (2, param)
    assert says is None or says in error.message


async def test_duplicate_ids_and_mixed_endpoints_are_refused() -> None:
    embed = {"model": "search", "input": "x"}
    data = b"\n".join([line("a"), line("a"), line("b", url="/v1/embeddings", body=embed)])
    checked = await check(chunked(data), max_lines=10, max_line_bytes=4096)
    assert [(e.line, e.param) for e in checked.errors] == [(2, "custom_id"), (3, "url")]


async def test_limits_on_lines_and_line_length() -> None:
    too_many = b"\n".join(line(str(i)) for i in range(4))
    checked = await check(chunked(too_many), max_lines=3, max_line_bytes=4096)
    assert checked.errors[-1].message == "the file has 4 requests; the limit is 3"
    too_long = line("a") + b"\n" + line("b", body={**CHAT, "user": "u" * 500})
    checked = await check(chunked(too_long, 64), max_lines=10, max_line_bytes=300)
    assert (checked.errors[0].line, checked.errors[0].message) == (2, "the line is longer than 300 bytes")
    empty = await check(chunked(b"\n\n"), max_lines=10, max_line_bytes=300)
    assert empty.errors[0].message == "the file has no requests"


async def test_many_bad_lines_are_counted_but_only_the_first_listed() -> None:
    data = b"\n".join([b"{"] * (MAX_REPORTED + 5))
    checked = await check(chunked(data, 1000), max_lines=1000, max_line_bytes=4096)
    assert checked.error_count == MAX_REPORTED + 5 and len(checked.errors) == MAX_REPORTED
