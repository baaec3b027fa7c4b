"""Mapping a provider's HTTP answer to our errors, without a network: status, body shape, headers."""

from __future__ import annotations

import email.utils

import pytest

from aijobs.providers.http import embedded_error, error_for, retry_after_s


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, b'{"error": {"message": "bad", "type": "invalid_request_error"}}', "provider_rejected"),
        (
            400,
            b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", "code": "context_length_exceeded"}}',
            "provider_context_window",
        ),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}}',
            "provider_context_window",
        ),
        (
            400,
            b'{"error": {"code": 400, "message": "The input token count (99) exceeds the maximum number of tokens allowed (10).", "status": "INVALID_ARGUMENT"}}',
            "provider_context_window",
        ),
        (
            400,
            b'{"error": {"message": "Output data may contain inappropriate content.", "code": "data_inspection_failed"}}',
            "provider_content_filtered",
        ),
        (400, b'{"error": {"message": "blocked", "code": "content_filter"}}', "provider_content_filtered"),
        (401, b'{"error": {"message": "Incorrect API key"}}', "provider_auth"),
        (402, b'{"error": {"message": "Insufficient Balance"}}', "provider_auth"),
        (403, b'{"message": "forbidden"}', "provider_auth"),
        (
            404,
            b'{"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}',
            "provider_model_not_found",
        ),
        (413, b"request entity too large", "provider_context_window"),
        (422, b'{"detail": "unprocessable"}', "provider_rejected"),
        (
            429,
            b'{"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}',
            "provider_rate_limited",
        ),
        (
            429,
            b'{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}',
            "provider_auth",
        ),
        (500, b"<html>oops</html>", "provider_unavailable"),
        (503, b'{"error": {"message": "overloaded"}}', "provider_unavailable"),
        (504, b"", "provider_timeout"),
        (
            529,
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "provider_unavailable",
        ),
    ],
)
def test_status_and_body_decide_the_error(status: int, body: bytes, code: str) -> None:
    error = error_for(status, body, {}, "p", "m")
    assert error.code == code
    assert error.status == status
    assert error.provider == "p" and error.model == "m"
    assert str(status) in error.message


def test_error_text_is_scrubbed_of_keys() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-proj-abcdefghijklmnop1234"}}'
    error = error_for(401, body, {}, "openai", "gpt")
    assert "sk-proj" not in error.message
    assert "sk-proj" not in error.body_excerpt
    assert "[redacted]" in error.message


def test_errors_inside_a_200_body() -> None:
    assert embedded_error({"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}) == 429
    assert embedded_error({"base_resp": {"status_code": 0, "status_msg": "success"}, "choices": []}) is None
    assert embedded_error({"error": {"code": "InvalidParameter", "message": "x"}}) == 400
    assert embedded_error({"choices": [], "error": None}) is None
    minimax = error_for(
        429, b'{"base_resp": {"status_code": 1002, "status_msg": "rpm limit"}}', {}, "minimax", "m"
    )
    assert minimax.code == "provider_rate_limited"
    assert "rpm limit" in minimax.message


def test_retry_after_in_every_form_providers_send() -> None:
    now = 1_700_000_000.0
    assert retry_after_s({"Retry-After": "7"}, now) == 7
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    assert retry_after_s({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}, now) == 30
    # Only an exhausted limit's reset counts, and when several are exhausted, the later one.
    openai = {"x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "28s",
              "x-ratelimit-remaining-requests": "499", "x-ratelimit-remaining-tokens": "0"}  # fmt: skip
    assert retry_after_s(openai, now) == 28
    assert retry_after_s({**openai, "x-ratelimit-remaining-requests": "0"}, now) == 28
    assert retry_after_s({"x-ratelimit-reset-requests": "6m0s"}, now) is None  # nothing says it ran out
    reset = "2023-11-14T22:14:00Z"  # 40 s after `now`
    anthropic = {"anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-requests-remaining": "0"}
    assert retry_after_s(anthropic, now) == 40
    assert retry_after_s({"Retry-After": "NaN"}, now) is None
    assert retry_after_s({"Retry-After": "999999"}, now) == 3600  # capped
    assert retry_after_s({"Retry-After": "soon"}, now) is None
    assert retry_after_s({}, now) is None


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        # Gemini: a bad key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
        (
            400,
            b'{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}',
            "provider_auth",
        ),
        # Gemini says "exceeded your current quota" for per-minute limits: a rate limit, not billing.
        (
            429,
            b'{"error": {"code": 429, "message": "You exceeded your current quota, please check your plan.", "status": "RESOURCE_EXHAUSTED"}}',
            "provider_rate_limited",
        ),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is too low to access the Anthropic API."}}',
            "provider_auth",
        ),
        (
            400,
            b'{"code": "Arrearage", "message": "Access denied, please make sure your account is in good standing.", "request_id": "x"}',
            "provider_auth",
        ),
        (
            429,
            b'{"error": {"message": "Your account is suspended", "type": "exceeded_current_quota_error"}}',
            "provider_auth",
        ),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error", "message": "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000"}}',
            "provider_context_window",
        ),
    ],
)
def test_what_the_body_says_overrules_the_status(status: int, body: bytes, code: str) -> None:
    assert error_for(status, body, {}, "p", "m").code == code


def test_minimax_codes_outside_the_table_are_server_errors() -> None:
    assert embedded_error({"base_resp": {"status_code": 1013, "status_msg": "internal error"}}) == 500
    assert embedded_error({"base_resp": {"status_code": 1039, "status_msg": "token limit"}}) == 429
    assert embedded_error({"base_resp": {"status_code": "weird", "status_msg": "?"}}) == 500


def test_google_retry_info_and_waits_only_on_rate_limits() -> None:
    body = b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}'
    assert error_for(429, body, {}, "g", "m").retry_after_s == 31
    exhausted = {"x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "0"}
    assert error_for(500, b"oops", exhausted, "p", "m").retry_after_s is None


def test_the_providers_own_key_is_redacted_whatever_its_shape() -> None:
    key = "Co4xPlainLettersAndDigits0123456789abcd"  # Cohere-style: no prefix scrub() could know
    error = error_for(401, b'{"message": "invalid api token: ' + key.encode() + b'"}', {}, "cohere", "m", key)
    assert key not in error.message
    assert key not in error.body_excerpt
