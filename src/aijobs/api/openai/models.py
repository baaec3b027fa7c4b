"""``GET /v1/models`` and ``GET /v1/models/{id}``: the names ``model`` may take (:mod:`aijobs.catalog`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from aijobs.api.deps import Services, services, tenant
from aijobs.api.openai.wire import answer
from aijobs.catalog import Model

router = APIRouter(tags=["openai"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]


def _model(model: Model, created: int) -> dict[str, Any]:
    owner = "aijobs" if model.kind != "target" else model.id.partition(":")[0]
    return {
        "id": model.id, "object": "model", "created": created, "owned_by": owner,
        "aijobs": {"kind": model.kind, "type": model.type, "resolves_to": model.resolves_to},
    }  # fmt: skip


@router.get("/v1/models", summary="The model names a call may use: features, aliases and targets")
async def list_models(svc: Svc, _: Tenant) -> Response:
    created = svc.catalog.loaded_at
    return answer({"object": "list", "data": [_model(m, created) for m in svc.catalog.models()]})


@router.get("/v1/models/{model_id:path}", summary="One model name")
async def get_model(model_id: str, svc: Svc, _: Tenant) -> Response:
    return answer(_model(svc.catalog.model(model_id), svc.catalog.loaded_at))
