"""Liveness, readiness, and local blob downloads (the signature in the URL is the authorisation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, JSONResponse

from aijobs.api.deps import Services, services
from aijobs.errors import NotFound
from aijobs.storage import BlobNotFound, LocalStore

router = APIRouter()


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    """Redis answers and the blob store is usable."""
    checks: dict[str, str] = {}
    try:
        await svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        await svc.blobs.check()
        checks["blobs"] = "ok"
    except Exception as exc:
        checks["blobs"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


@router.get("/v1/blobs/{key:path}", tags=["jobs"], include_in_schema=False)
async def blob(
    key: str,
    svc: Annotated[Services, Depends(services)],
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    """A blob from the local store, for a URL this service signed and that has not expired."""
    store = svc.blobs
    if not isinstance(store, LocalStore):
        raise NotFound("blobs are served by the object store, not the API")
    try:
        valid = store.verify(key, expires, sig)
        if not valid:
            raise NotFound("the link is invalid or has expired")
        _size, content_type = await store.stat(key)
    except (ValueError, BlobNotFound):
        raise NotFound("the link is invalid or has expired") from None
    return FileResponse(store.path_for(key), media_type=content_type, headers={"cache-control": "private"})
