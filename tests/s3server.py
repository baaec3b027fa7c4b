"""moto's S3 server over real HTTP on 127.0.0.1, for tests that talk to S3 the way production does.

It accepts any credentials; pass dummy ones (``testing``/``testing``) to the client explicitly rather
than through the process environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run the server in a thread on a free port; yield its endpoint URL, e.g. ``http://127.0.0.1:41234``."""
    # Port 0 lets the OS pick the port while binding, so there is no window for another process to take it.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
