"""TEST FAKE: one Starlette app hosting every media provider fake, each under its own path prefix.

An adapter under test gets ``base_url = media_fakes_url + "/" + prefix`` (e.g. ``/kling``); outputs are
served from ``/files/...`` on the same server. See :mod:`tests.fakes.media.farm` for the control API.
"""

from __future__ import annotations

import importlib
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from tests.fakes.media.farm import Dropped, Farm, control_routes

#: prefix → module under tests/fakes/media exposing ``routes(farm) -> list[BaseRoute]``.
PROVIDERS = {
    "kling": "kling",
    "bfl": "bfl",
    "fal": "fal",
    "minimax": "minimax",
    "ark": "ark",
    "veo": "veo",
    "dashscope": "dashscope",
    "openai": "openai_media",
    "elevenlabs": "elevenlabs",
}


def create_app() -> Starlette:
    """A fresh farm and every provider fake over it; ``app.state.farm`` is the farm (for in-process tests)."""
    farm = Farm()
    routes: list[BaseRoute] = list(control_routes(farm))
    for prefix, module_name in PROVIDERS.items():
        module: Any = importlib.import_module(f"tests.fakes.media.{module_name}")
        routes.append(Mount(f"/{prefix}", routes=module.routes(farm)))
    app = Starlette(routes=routes, exception_handlers={Dropped: _dropped})
    app.state.farm = farm
    return app


async def _dropped(request: Request, exc: Exception) -> Response:
    """A held request whose caller went away: there is no one to answer (nginx logs these as 499)."""
    return Response(status_code=499)
