"""``python -m bench.media_fake PORT RENDER_S``: the media provider fakes (tests/fakes/media) as a server.

A TEST FAKE, not a provider: every task takes ``RENDER_S`` seconds to "render", then serves
deterministic output bytes. Runs in its own process so the worker under measurement shares no CPU
with it beyond the machine's.
"""

from __future__ import annotations

import sys

import uvicorn
from tests.fakes.media.app import create_app


def main() -> None:
    port, render_s = int(sys.argv[1]), float(sys.argv[2])
    app = create_app()
    app.state.farm.render_s = render_s
    app.state.farm.keep_journal = False
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
