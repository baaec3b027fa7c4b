"""TEST FAKE of Google Veo on the Gemini API (ai.google.dev/gemini-api/docs/video); never used in production.

Mounted under ``/veo`` by :mod:`tests.fakes.media.app`; tasks live on the shared render farm.

- ``POST /v1beta/models/{model}:predictLongRunning`` ``{instances: [{prompt, image?: {bytesBase64Encoded,
  mimeType}}], parameters: {aspectRatio, durationSeconds, resolution, negativePrompt?,
  personGeneration?}}`` → ``{name: "models/{model}/operations/{id}"}``. Like Google it refuses unknown
  fields, aspect ratios other than 16:9 / 9:16, durations other than 4 / 6 / 8, and 1080p below 8 s.
  With the farm option ``veo_operation_names = "short"`` the name is ``operations/{id}`` instead (the
  form Google's generic Operations service uses), polled at ``GET /v1beta/operations/{id}``.
- ``GET /v1beta/models/{model}/operations/{id}`` → ``{name}`` while rendering; when done
  ``{name, done: true, response: {generateVideoResponse: {generatedSamples: [{video: {uri}}]}}}``.
  ``[fail]`` ends with ``error: {code: 13, status: "INTERNAL"}``; ``[moderate]`` with
  ``raiMediaFilteredCount: 1`` and no samples; ``[expire]`` answers 404 NOT_FOUND.
- ``GET /v1beta/files/{id}:download?alt=media`` serves the video, and only with the key (403 without).

Every call needs ``x-goog-api-key`` (any value; absent → 403 PERMISSION_DENIED, as Google answers
unregistered callers). Errors are Google's ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response, output_bytes
from tests.fakes.providers import error_response

PROVIDER = "veo"
ASPECT_RATIOS = frozenset({"16:9", "9:16"})
DURATIONS_S = frozenset({4, 6, 8})
RESOLUTIONS = frozenset({"720p", "1080p"})
PERSON_GENERATION = frozenset({"allow_all", "allow_adult", "dont_allow"})
PARAMETERS = frozenset({"aspectRatio", "durationSeconds", "resolution", "negativePrompt", "personGeneration"})
PARAMETERS |= {"sampleCount", "seed", "enhancePrompt", "generateAudio"}
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
RESPONSE_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _error(status: int, message: str, retry_after: float | None = None) -> Response:
    return error_response("gemini", status, message, retry_after=retry_after)


async def _gate(request: Request, farm: Farm, step: str) -> tuple[Any, Response | None]:
    """Journal the call, then answer an injected fault or a missing key; the body when neither."""
    body = await farm.record(request, PROVIDER, step)
    fault = await farm.fault(PROVIDER, step)
    if fault is not None and fault.status is not None:
        return body, _error(fault.status, f"injected {step} fault", fault.retry_after)
    if not request.headers.get("x-goog-api-key"):
        return body, _error(403, NO_KEY)
    return body, None


def _invalid(body: Any) -> str | None:
    """Why Google would refuse this predictLongRunning body, or ``None``."""
    if not isinstance(body, dict) or set(body) - {"instances", "parameters"}:
        return "Invalid JSON payload received. Expected instances and parameters."
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        return "instances must hold exactly one instance."
    instance = instances[0]
    if set(instance) - {"prompt", "image"}:
        return (
            f'Invalid JSON payload received. Unknown name "{sorted(set(instance) - {"prompt", "image"})[0]}".'
        )
    if not isinstance(instance.get("prompt"), str) or not instance["prompt"].strip():
        return "instances[0].prompt is required."
    if "image" in instance and (why := _invalid_image(instance["image"])):
        return why
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        return "parameters must be an object."
    if unknown := set(parameters) - PARAMETERS:
        return f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'parameters'."
    duration_s = parameters.get("durationSeconds", 8)
    resolution = parameters.get("resolution", "720p")
    checks = [
        (parameters.get("aspectRatio", "16:9") in ASPECT_RATIOS, "aspectRatio must be 16:9 or 9:16."),
        (type(duration_s) is int and duration_s in DURATIONS_S, "durationSeconds must be 4, 6 or 8."),
        (resolution in RESOLUTIONS, "resolution must be 720p or 1080p."),
        (resolution != "1080p" or duration_s == 8, "1080p is only supported with durationSeconds 8."),
        (
            parameters.get("personGeneration", "allow_all") in PERSON_GENERATION,
            "personGeneration is invalid.",
        ),
        (isinstance(parameters.get("negativePrompt", ""), str), "negativePrompt must be a string."),
    ]
    return next((message for ok, message in checks if not ok), None)


def _invalid_image(image: Any) -> str | None:
    if not isinstance(image, dict) or set(image) != {"bytesBase64Encoded", "mimeType"}:
        return "instances[0].image needs bytesBase64Encoded and mimeType."
    if image["mimeType"] not in IMAGE_TYPES:
        return f"Unsupported image mimeType {image['mimeType']!r}."
    try:
        base64.b64decode(image["bytesBase64Encoded"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        return "instances[0].image.bytesBase64Encoded is not valid base64."
    return None


def _name(farm: Farm, task: FakeTask) -> str:
    """The operation's name, in the form the farm's options ask for."""
    if farm.options.get("veo_operation_names") == "short":
        return f"operations/{task.id}"
    return f"models/{task.model}/operations/{task.id}"


def _operation(request: Request, task: FakeTask, name: str) -> dict[str, Any]:
    """The operation resource as Google shows it in ``task``'s current phase."""
    phase = task.phase()
    if phase in ("queued", "running"):
        return {"name": name}
    if phase == "failed":
        error = {
            "code": 13,
            "message": "Video generation failed due to an internal error.",
            "status": "INTERNAL",
        }
        return {"name": name, "done": True, "error": error}
    if phase == "moderated":
        reasons = ["The video could not be generated because it may violate our usage policies."]
        generated: dict[str, Any] = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": reasons}
    else:
        uri = request.url_for("veo_download", file_action=f"{task.id}:download").include_query_params(
            alt="media"
        )
        generated = {"generatedSamples": [{"video": {"uri": str(uri)}}]}
    return {
        "name": name,
        "done": True,
        "response": {"@type": RESPONSE_TYPE, "generateVideoResponse": generated},
    }


def routes(farm: Farm) -> list[BaseRoute]:
    """The Veo endpoints, relative to the ``/veo`` mount."""

    async def predict(request: Request) -> Response:
        body, refused = await _gate(request, farm, "submit")
        if refused is not None:
            return refused
        model, _, method = request.path_params["model_action"].partition(":")
        if method != "predictLongRunning":
            return _error(404, f"Method {method!r} is not found.")
        if not model.startswith("veo-"):
            return _error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for this method.",
            )
        if (why := _invalid(body)) is not None:
            return _error(400, why)
        task = farm.create(PROVIDER, model, body["instances"][0]["prompt"], "video", body)
        return await farm.answer(PROVIDER, "submit", json_response({"name": _name(farm, task)}))

    async def operation(request: Request) -> Response:
        _, refused = await _gate(request, farm, "poll")
        if refused is not None:
            return refused
        task = farm.find(request.path_params["operation_id"], PROVIDER)
        model = request.path_params.get("model")
        if task is None or (model is not None and task.model != model):
            return _error(404, "Requested entity was not found.")
        name = f"models/{model}/operations/{task.id}" if model else f"operations/{task.id}"
        return json_response(_operation(request, task, name))

    async def download(request: Request) -> Response:
        _, refused = await _gate(request, farm, "download")
        if refused is not None:
            return refused
        file_id, _, action = request.path_params["file_action"].partition(":")
        task = farm.tasks.get(file_id)
        if action != "download" or task is None or task.provider != PROVIDER or task.phase() != "succeeded":
            return _error(404, "Requested entity was not found.")
        if request.query_params.get("alt") != "media":
            return _error(400, "Only alt=media downloads are served here.")
        return Response(output_bytes(task), 200, media_type="video/mp4")

    return [
        Route("/v1beta/models/{model_action}", predict, methods=["POST"]),
        Route("/v1beta/models/{model}/operations/{operation_id}", operation, methods=["GET"]),
        Route("/v1beta/operations/{operation_id}", operation, methods=["GET"]),
        Route("/v1beta/files/{file_action}", download, methods=["GET"], name="veo_download"),
    ]
