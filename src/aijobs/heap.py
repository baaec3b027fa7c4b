"""The garbage collector, set for a long-lived server process.

Each request allocates thousands of short-lived objects, so with CPython's defaults the young
generation is collected several times per request, and every few thousand requests a full pass
rescans the whole heap, mostly objects built at startup that live as long as the process. Freezing
those and collecting the young generation less often cut the API's CPU per chat completion by a
third (``make bench``, phase g). Cyclic garbage is still collected, in larger batches.
"""

from __future__ import annotations

import gc

#: Allocations between young-generation passes (CPython's default is 700), and the passes between
#: older ones (defaults 10 and 10).
THRESHOLDS = (20_000, 50, 100)


def settle() -> None:
    """Call once startup has built what lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
