"""Token estimates, for when a provider reports no usage (and for the simulator).

Words and punctuation marks, and each CJK character on its own: close enough to BPE counts for
English (a word is about a token) and for Chinese, Japanese and Korean (a character is about a token;
these scripts have no spaces, so a run of them is a sentence, not a word) to flag cost trends and to
share a batch's tokens per minute fairly. Always marked ``estimated`` wherever it stands in for a
provider's own count.
"""

from __future__ import annotations

import re

#: Han (the URO, extension A, compatibility ideographs and the supplementary planes' extensions),
#: Hiragana, Katakana (with its phonetic extensions and the halfwidth forms), Bopomofo, Hangul
#: syllables and jamo, CJK symbols and punctuation (not the ideographic space, which is a space)
#: and the fullwidth forms (the fullwidth comma, question mark, letters and digits).
_CJK = (
    "\u1100-\u11ff\u3001-\u303f\u3040-\u309f\u30a0-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff\uff01-\uffef"
    "\U00020000-\U0003ffff"
)
# One CJK character; else a run of word characters that are not CJK; else one punctuation mark.
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+|[^\\w\\s]")


def count_tokens(text: str) -> int:
    """An estimate of the tokens in ``text``."""
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """The pieces :func:`count_tokens` counts."""
    return _TOKEN.findall(text)
