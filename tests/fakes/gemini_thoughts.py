"""TEST FAKE of Gemini 3's ``generateContent`` with thought signatures; not a provider.

``POST /v1beta/models/{model}:generateContent`` and ``...:streamGenerateContent?alt=sse`` behave as the
Gemini API documents for thinking models (ai.google.dev/gemini-api/docs/thought-signatures):

- A turn whose request declares tools, and whose last content is the user's text, is answered with a
  ``functionCall`` of the first declared function (of every declared function when the text says
  "parallel"); the ``thoughtSignature`` sits next to ``functionCall`` in the first call's part only.
- A request whose last content answers those calls (``functionResponse`` parts) is answered with text,
  the signature on the last part (streamed: an empty text part of its own at the end).
- The current turn (everything after the newest user content with text in it) is checked as Gemini 3
  checks it: the first ``functionCall`` part of each model step must carry its signature, else the
  request is a ``400 INVALID_ARGUMENT`` "Function call is missing a thought_signature in functionCall
  parts..." A signature anywhere that is not one this fake issued for that very part (altered, or
  moved to another call) is a ``400 INVALID_ARGUMENT`` "Corrupted thought signature."
- Fields Gemini does not define are a 400, as Google's JSON parsing answers them; no ``x-goog-api-key``
  is a 401 ``UNAUTHENTICATED``.

Signatures are opaque base64 (a nonce and an HMAC of the call they were issued for), so the fake keeps
no state to check them. ``GET /_fake/requests`` lists the bodies received; ``POST /_fake/reset`` clears it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_KEY = secrets.token_bytes(32)
_NONCE = 16
_TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}
_PART_FIELDS = {
    "text", "thought", "thoughtSignature", "functionCall", "functionResponse", "inlineData", "fileData",
}  # fmt: skip
MISSING = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to "
    "work correctly, and missing thought_signature may lead to degraded model performance. Additional "
    "data, function call `default_api:{name}` , position {position}. please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
CORRUPTED = "Corrupted thought signature."


class GeminiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        body = {"error": {"code": self.status, "message": self.message, "status": self.code}}
        return Response(orjson.dumps(body), self.status, media_type="application/json")


def _invalid(message: str) -> GeminiError:
    return GeminiError(400, "INVALID_ARGUMENT", message)


def _what(part: dict[str, Any]) -> bytes:
    """What a signature on ``part`` is bound to: its function call (name and arguments), or "text"."""
    call = part.get("functionCall")
    if isinstance(call, dict):
        return orjson.dumps(
            {"name": call.get("name"), "args": call.get("args") or {}}, option=orjson.OPT_SORT_KEYS
        )
    return b"text"


def sign(part: dict[str, Any]) -> str:
    nonce = secrets.token_bytes(_NONCE)
    return base64.b64encode(nonce + hmac.digest(_KEY, nonce + _what(part), hashlib.sha256)).decode()


def _genuine(signature: Any, part: dict[str, Any]) -> bool:
    if not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    nonce, mac = raw[:_NONCE], raw[_NONCE:]
    return hmac.compare_digest(mac, hmac.digest(_KEY, nonce + _what(part), hashlib.sha256))


def check(body: Any) -> list[dict[str, Any]]:
    """The request's ``contents``, checked as Gemini 3 checks them; raises :class:`GeminiError`."""
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received.")
    for name in body:
        if name not in _TOP_LEVEL:
            raise _invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. (contents[{i}])")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            unknown = set(part) - _PART_FIELDS if isinstance(part, dict) else {"?"}
            if unknown:
                raise _invalid(
                    f'Invalid JSON payload received. Unknown name "{min(unknown)}" at '
                    f"'contents[{i}].parts[{j}]': Cannot find field."
                )
            if "thoughtSignature" in part and not _genuine(part["thoughtSignature"], part):
                raise _invalid(CORRUPTED)
    start = max(
        (i for i, c in enumerate(contents) if c["role"] == "user" and any("text" in p for p in c["parts"])),
        default=0,
    )
    for i in range(start, len(contents)):
        if contents[i]["role"] != "model":
            continue
        calls = [p for p in contents[i]["parts"] if "functionCall" in p]
        if calls and "thoughtSignature" not in calls[0]:
            name = calls[0]["functionCall"].get("name", "")
            raise _invalid(MISSING.format(name=name, position=i + 1))
    return contents


def answer_parts(body: dict[str, Any], contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model's parts for a checked request."""
    last = contents[-1]
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if last["role"] == "user" and results:
        said = "; ".join(orjson.dumps(r.get("response")).decode() for r in results)
        return [{"text": f"The tools said: {said}"}]
    declared = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    question = " ".join(p.get("text", "") for p in last["parts"])
    if declared and last["role"] == "user":
        chosen = declared if "parallel" in question else declared[:1]
        return [{"functionCall": {"name": d["name"], "args": {"q": question}}} for d in chosen]
    return [{"text": f"You said: {question}"}]


def _signed(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``parts`` signed where Gemini 3 signs: the first function call, else the last part."""
    calls = [p for p in parts if "functionCall" in p]
    target = calls[0] if calls else parts[-1]
    target["thoughtSignature"] = sign(target)
    return parts


def _answer(parts: list[dict[str, Any]], model: str) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8, "thoughtsTokenCount": 30},
        "modelVersion": model,
    }  # fmt: skip


def create_app() -> Starlette:
    """A fresh fake with its own journal."""
    received: list[Any] = []

    async def generate(request: Request) -> Response:
        model, _, method = request.path_params["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return GeminiError(404, "NOT_FOUND", f"Method {method!r} not found.").response()
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        received.append(body)
        try:
            if not request.headers.get("x-goog-api-key"):
                raise GeminiError(401, "UNAUTHENTICATED", "Method doesn't allow unregistered callers.")
            contents = check(body)
        except GeminiError as exc:
            return exc.response()
        parts = answer_parts(body, contents)
        if method == "generateContent":
            return Response(orjson.dumps(_answer(_signed(parts), model)), media_type="application/json")
        if "functionCall" not in parts[0]:  # text streams in pieces; the signature comes on its own last
            text = parts[0]["text"]
            parts = [{"text": text[: len(text) // 2]}, {"text": text[len(text) // 2 :]}, {"text": ""}]
        return StreamingResponse(_stream(_signed(parts), model), media_type="text/event-stream")

    async def requests(request: Request) -> Response:
        return Response(orjson.dumps(received), media_type="application/json")

    async def reset(request: Request) -> Response:
        received.clear()
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1beta/models/{call:path}", generate, methods=["POST"]),
            Route("/_fake/requests", requests, methods=["GET"]),
            Route("/_fake/reset", reset, methods=["POST"]),
        ]
    )


async def _stream(parts: list[dict[str, Any]], model: str) -> AsyncIterator[bytes]:
    """One chunk per part (a function call arrives whole), the usage on the last, as Gemini streams."""
    for i, part in enumerate(parts):
        chunk = _answer([part], model)
        candidate = chunk["candidates"][0]
        if i < len(parts) - 1:
            del candidate["finishReason"], chunk["usageMetadata"]
        yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
