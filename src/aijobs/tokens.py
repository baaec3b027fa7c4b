"""Token estimates, for when a provider reports no usage (and for the simulator).

Words and punctuation marks: close enough to BPE counts for English to flag cost trends, and always
marked ``estimated`` wherever it stands in for a provider's own count.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """An estimate of the tokens in ``text``."""
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """The pieces :func:`count_tokens` counts."""
    return _TOKEN.findall(text)
