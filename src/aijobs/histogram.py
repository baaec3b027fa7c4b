"""Log-scale latency buckets: what the ledger, the breakers and ``/metrics`` count latencies in.

A latency is counted in bucket ``i`` covering ``(GROWTH**(i-1), GROWTH**i]`` milliseconds, so a
histogram is a small dict of integer counters that Redis can add up with ``HINCRBY`` and any reader
can merge. Quantiles read from it are within one bucket (about 19%) of the exact value; the upper
bound of the bucket is reported, as Prometheus does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GROWTH = 1.189207115  # 2 ** 0.25: four buckets per doubling
MAX_BUCKET = 100  # ~34 minutes; anything slower lands here


def bucket_of(latency_ms: float) -> int:
    """The bucket counting ``latency_ms``."""
    if latency_ms <= 1.0:
        return 0
    return min(MAX_BUCKET, math.ceil(math.log(latency_ms, GROWTH) - 1e-9))


def upper_ms(bucket: int) -> float:
    """The largest latency bucket ``bucket`` counts."""
    return GROWTH**bucket


def quantile(counts: Mapping[int, float], q: float) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) of a histogram, as its bucket's upper bound; ``None`` if empty."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return round(upper_ms(bucket), 3)
    return round(upper_ms(max(counts)), 3)


def merge(histograms: Iterable[Mapping[int, float]]) -> dict[int, float]:
    """The sum of several histograms."""
    total: dict[int, float] = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            total[bucket] = total.get(bucket, 0) + count
    return total
