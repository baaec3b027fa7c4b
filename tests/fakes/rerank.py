"""TEST FAKE: the rerank endpoints of Cohere v2, Jina, Voyage, DashScope and SiliconFlow.

Also home to the small request-checking helpers ``embed.py`` shares. Every handler takes the parsed JSON
body and the path parameters and returns the provider's documented success body, or raises
:class:`BadRequest` for a body the real provider answers with a 400. Unknown fields are rejected, so an
adapter that sends a field under the wrong name (Voyage's ``top_n`` for ``top_k``) fails loudly.

Scores are real but lexical: the fraction of the query's words (lowercased, stop words dropped, a trailing
"s" stripped) found in the document, in [0, 1]. Relevant documents rank first; ties keep input order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
    }
    | {"the", "to", "what", "which", "with"}
)


class BadRequest(ValueError):
    """A request body the real provider rejects with HTTP 400; the text becomes the error message."""


def check_fields(body: dict[str, Any], required: Iterable[str], optional: Iterable[str] = ()) -> None:
    required = tuple(required)
    for name in required:
        if name not in body:
            raise BadRequest(f"invalid request: missing required field `{name}`")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise BadRequest(f"invalid request: unknown field `{unknown[0]}`")


def string(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"invalid request: `{name}` must be a non-empty string")
    return value


def strings(body: dict[str, Any], name: str, limit: int | None = None) -> list[str]:
    value = body[name]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"invalid request: `{name}` must be a non-empty list of strings")
    if limit is not None and len(value) > limit:
        raise BadRequest(f"invalid request: `{name}` holds {len(value)} items; the maximum is {limit}")
    return value


def opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"invalid request: `{name}` must be a positive integer")
    return value


def opt_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"invalid request: `{name}` must be a boolean")
    return value


def count_tokens(text: str) -> int:
    return max(1, len(WORD.findall(text)))


def new_id() -> str:
    return str(uuid.uuid4())


def _terms(text: str) -> set[str]:
    words = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in WORD.findall(text.lower())]
    return {w for w in words if w not in STOP_WORDS} or set(words)


def relevance(query: str, document: str) -> float:
    """Fraction of the query's terms present in ``document``: 0.0 (none) to 1.0 (all)."""
    wanted = _terms(query)
    return len(wanted & _terms(document)) / len(wanted) if wanted else 0.0


def ranked(query: str, documents: list[str], top: int | None) -> list[tuple[int, float]]:
    """(index, score) pairs, best first, cut to ``top``."""
    scores = [(i, relevance(query, doc)) for i, doc in enumerate(documents)]
    return sorted(scores, key=lambda pair: (-pair[1], pair[0]))[:top]


def results(
    query: str, documents: list[str], top: int | None, document: Callable[[str], Any] | None = None
) -> list[dict[str, Any]]:
    """The ranked result items; each carries ``document(text)`` when ``document`` is given."""
    items: list[dict[str, Any]] = []
    for i, score in ranked(query, documents, top):
        items.append({"index": i, "relevance_score": score})
        if document is not None:
            items[-1]["document"] = document(documents[i])
    return items


def as_text(text: str) -> dict[str, str]:
    return {"text": text}


def rerank_tokens(query: str, documents: list[str]) -> int:
    """Voyage's definition, used by all: query tokens x documents + tokens of every document."""
    return count_tokens(query) * len(documents) + sum(count_tokens(doc) for doc in documents)


def cohere_rerank(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """Cohere v2 ``POST /v2/rerank`` (docs.cohere.com/reference/rerank)."""
    check_fields(body, ("model", "query", "documents"), ("top_n", "max_tokens_per_doc"))
    string(body, "model")
    query, documents, top = string(body, "query"), strings(body, "documents", 1000), opt_int(body, "top_n")
    opt_int(body, "max_tokens_per_doc")
    return {
        "id": new_id(),
        "results": results(query, documents, top),
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }


def jina_rerank(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """Jina ``POST /v1/rerank`` (jina.ai/reranker); documents may be strings or ``{"text": ...}``."""
    check_fields(
        body,
        ("model", "query", "documents"),
        ("top_n", "return_documents", "return_embeddings", "truncation"),
    )
    model, query = string(body, "model"), string(body, "query")
    raw = body["documents"]
    if isinstance(raw, list):
        raw = [doc["text"] if isinstance(doc, dict) and set(doc) == {"text"} else doc for doc in raw]
    documents = strings({"documents": raw}, "documents", 2048)
    top, with_docs = opt_int(body, "top_n"), opt_bool(body, "return_documents", True)
    found = results(query, documents, top, as_text if with_docs else None)
    return {"model": model, "usage": {"total_tokens": rerank_tokens(query, documents)}, "results": found}


def voyage_rerank(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """Voyage ``POST /v1/rerank`` (docs.voyageai.com/reference/reranker-api): ``top_k`` and ``data``."""
    check_fields(body, ("query", "documents", "model"), ("top_k", "return_documents", "truncation"))
    model, query, documents = string(body, "model"), string(body, "query"), strings(body, "documents", 1000)
    top, with_docs = opt_int(body, "top_k"), opt_bool(body, "return_documents", False)
    opt_bool(body, "truncation", True)
    data = results(query, documents, top, str if with_docs else None)
    usage = {"total_tokens": rerank_tokens(query, documents)}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def dashscope_rerank(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """DashScope ``POST /api/v1/services/rerank/text-rerank/text-rerank`` (Model Studio text rerank)."""
    check_fields(body, ("model", "input"), ("parameters",))
    string(body, "model")
    given, parameters = body["input"], body.get("parameters", {})
    if not isinstance(given, dict) or not isinstance(parameters, dict):
        raise BadRequest("`input` and `parameters` must be JSON objects")
    check_fields(given, ("query", "documents"))
    check_fields(parameters, (), ("top_n", "return_documents", "instruct"))
    query, documents = string(given, "query"), strings(given, "documents", 500)
    top, with_docs = opt_int(parameters, "top_n"), opt_bool(parameters, "return_documents", False)
    found = results(query, documents, top, as_text if with_docs else None)
    usage = {"total_tokens": rerank_tokens(query, documents)}
    return {"output": {"results": found}, "usage": usage, "request_id": new_id()}


def siliconflow_rerank(body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """SiliconFlow ``POST /v1/rerank`` (docs.siliconflow.cn), the Cohere-like shape Ark and Qianfan share."""
    optional = ("top_n", "return_documents", "instruction", "max_chunks_per_doc", "overlap_tokens")
    check_fields(body, ("model", "query", "documents"), optional)
    string(body, "model")
    query, documents = string(body, "query"), strings(body, "documents")
    top, with_docs = opt_int(body, "top_n"), opt_bool(body, "return_documents", False)
    opt_int(body, "max_chunks_per_doc")
    found = results(query, documents, top, as_text if with_docs else None)
    tokens = {"input_tokens": rerank_tokens(query, documents), "output_tokens": 0}
    return {"id": new_id(), "results": found, "meta": {"billed_units": tokens, "tokens": tokens}}
