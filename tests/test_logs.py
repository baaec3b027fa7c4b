"""Structured logs: JSON lines carrying the bound job context, with secrets redacted."""

from __future__ import annotations

import logging

import orjson

from aijobs import logs


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("key sk-live-abcdefghijklmnop leaked")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("aijobs.worker", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_bound_context() -> None:
    formatter = logs.JsonFormatter()
    with logs.bind(job_id="job_1", feature="support-chat"), logs.bind(target="sim:fast", attempt=2):
        line = orjson.loads(formatter.format(record("calling %s", "upstream")))
    assert line["message"] == "calling upstream" and line["level"] == "WARNING"
    assert (line["job_id"], line["feature"], line["target"], line["attempt"]) == (
        "job_1",
        "support-chat",
        "sim:fast",
        2,
    )
    assert "job_id" not in orjson.loads(formatter.format(record("outside")))  # the context ended


def test_secrets_never_reach_a_log_line() -> None:
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        text = formatter.format(record("auth failed for Bearer abcdefghijklmnopqrst", exc=True))
        assert "abcdefghijklmnopqrst" not in text and "sk-live-abcdefghijklmnop" not in text
        assert "[redacted]" in text
