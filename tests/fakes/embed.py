"""TEST FAKE: the embedding endpoints of Gemini (``v1beta``) and Cohere v2.

Vectors are deterministic (seeded by a hash of the text) and unit length, so the same text always embeds
the same way and different texts differ. Handlers follow the contract of ``rerank.py``: parsed body and
path parameters in, the provider's success body out, :class:`BadRequest` for a body it would reject.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from tests.fakes.rerank import BadRequest, check_fields, count_tokens, new_id, opt_int, string, strings

GEMINI_DEFAULT_DIMS = 768
GEMINI_MAX_DIMS = 3072
GEMINI_MAX_BATCH = 100
GEMINI_TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)
# Google's JSON mapping of protobuf accepts a field's original snake_case name as well as its camelCase one.
GEMINI_ALIASES = {"output_dimensionality": "outputDimensionality", "task_type": "taskType"}
COHERE_MAX_TEXTS = 96
COHERE_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering", "image"})
COHERE_EMBEDDING_TYPES = frozenset({"float", "int8", "uint8", "binary", "ubinary", "base64"})
COHERE_V4_DIMS = frozenset({256, 512, 1024, 1536})


def vector(text: str, dims: int) -> list[float]:
    """A unit vector of ``dims`` floats, the same for the same text."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _gemini_values(request: Any, model: str | None) -> list[float]:
    """One EmbedContentRequest; ``model`` is the name it must carry when it sits in a batch."""
    if not isinstance(request, dict):
        raise BadRequest("Invalid JSON payload received. Each request must be an object.")
    request = {GEMINI_ALIASES.get(key, key): value for key, value in request.items()}
    optional = ("model", "taskType", "title", "outputDimensionality")
    check_fields(request, ("content", "model") if model else ("content",), optional)
    if model and request["model"] != model:
        raise BadRequest(f"Model name {request['model']!r} does not match {model!r} in the request URL.")
    content = request["content"]
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
        raise BadRequest("* EmbedContentRequest.content.parts: must be a non-empty list")
    check_fields(content, ("parts",), ("role",))
    texts = [part.get("text") if isinstance(part, dict) else None for part in content["parts"]]
    if not all(isinstance(text, str) for text in texts):
        raise BadRequest("* EmbedContentRequest.content.parts[].text: required for text embedding")
    if request.get("taskType", "TASK_TYPE_UNSPECIFIED") not in GEMINI_TASK_TYPES:
        raise BadRequest(f"Invalid value at 'task_type': {request['taskType']!r}")
    dims = opt_int(request, "outputDimensionality") or GEMINI_DEFAULT_DIMS
    if dims > GEMINI_MAX_DIMS:
        raise BadRequest(f"outputDimensionality must be at most {GEMINI_MAX_DIMS}")
    return vector(" ".join(str(text) for text in texts), dims)


def gemini_embed(body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """``POST /v1beta/models/{model}:embedContent`` (ai.google.dev/api/embeddings)."""
    return {"embedding": {"values": _gemini_values(body, None)}}


def gemini_batch(body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """``POST /v1beta/models/{model}:batchEmbedContents``: one embedding per request, in order."""
    check_fields(body, ("requests",))
    requests = body["requests"]
    if not isinstance(requests, list) or not requests:
        raise BadRequest("* BatchEmbedContentsRequest.requests: must be a non-empty list")
    if len(requests) > GEMINI_MAX_BATCH:
        raise BadRequest(f"* BatchEmbedContentsRequest.requests: at most {GEMINI_MAX_BATCH} requests")
    model = f"models/{params['model']}"
    return {"embeddings": [{"values": _gemini_values(request, model)} for request in requests]}


def cohere_embed(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """Cohere v2 ``POST /v2/embed`` (docs.cohere.com/reference/embed); this fake embeds ``texts`` only."""
    optional = ("texts", "images", "inputs", "embedding_types", "output_dimension", "truncate", "max_tokens")
    check_fields(body, ("model", "input_type"), optional)
    model = string(body, "model")
    if "texts" not in body or "images" in body or "inputs" in body:
        raise BadRequest("invalid request: this fake embeds `texts` only; `texts` is required")
    texts = strings(body, "texts", COHERE_MAX_TEXTS)
    if body["input_type"] not in COHERE_INPUT_TYPES:
        raise BadRequest(f"invalid request: input_type must be one of {sorted(COHERE_INPUT_TYPES)}")
    types = body.get("embedding_types", ["float"])
    if not isinstance(types, list) or not types or not set(types) <= COHERE_EMBEDDING_TYPES:
        raise BadRequest(
            f"invalid request: embedding_types must be a subset of {sorted(COHERE_EMBEDDING_TYPES)}"
        )
    if set(types) != {"float"}:
        raise BadRequest("invalid request: this fake returns `float` embeddings only")
    if body.get("truncate", "END") not in ("NONE", "START", "END"):
        raise BadRequest("invalid request: truncate must be one of NONE, START, END")
    dims = opt_int(body, "output_dimension")
    if dims is not None and (not model.startswith("embed-v4") or dims not in COHERE_V4_DIMS):
        raise BadRequest(
            "invalid request: output_dimension must be 256, 512, 1024 or 1536 on embed-v4 models"
        )
    dims = dims or (1536 if model.startswith("embed-v4") else 384 if "light" in model else 1024)
    return {
        "id": new_id(),
        "embeddings": {"float": [vector(text, dims) for text in texts]},
        "texts": texts,
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"input_tokens": sum(count_tokens(text) for text in texts)},
        },
    }
