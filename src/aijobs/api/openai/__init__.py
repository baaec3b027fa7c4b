"""The OpenAI-compatible surface: apps keep the OpenAI SDK and change only its base URL.

Every call runs through aijobs' routing, fallback, budgets and ledger (see :mod:`aijobs.calls`);
errors take OpenAI's status codes (see :mod:`aijobs.api.errors`).
"""

from fastapi import APIRouter

from aijobs.api.openai import batches, chat, media, models, vectors

router = APIRouter()
for module in (chat, vectors, media, models, batches):
    router.include_router(module.router)
