"""Run the TEST FAKE provider app (``tests.fakes.providers``) on loopback, in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from tests.fakes.providers import create_app

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def fake_providers_server(app: ASGIApp | None = None) -> Iterator[str]:
    """Serve ``app`` (default: a fresh provider fake) on 127.0.0.1 and a free port; yield its base URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket's proto says TCP, and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app or create_app(), loop="asyncio", http="h11", ws="none", lifespan="off",
            log_config=None, log_level="warning", access_log=False,
        )  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-providers", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the fake providers server did not start")
                time.sleep(0.01)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(START_TIMEOUT_S)
    finally:
        sock.close()
