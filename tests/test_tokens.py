"""Token estimates: a word or a punctuation mark is a token; so is each Chinese, Japanese or Korean
character (those scripts have no spaces, and BPE tokenizers give them about a token each)."""

# ruff: noqa: RUF001  (fullwidth punctuation is what these tests are about)

from __future__ import annotations

from aijobs.routing.quotas import estimate_tokens
from aijobs.tokens import count_tokens, split_tokens
from aijobs.types.chat import ChatInput

# 19 Han characters (the case: the old estimate counted a run of them as one token).
REFUND_ZH = "退款需要十四个工作日才能到账请耐心等待"


def test_english_counts_words_and_punctuation() -> None:
    assert split_tokens("Hello, world! It's 3.14.") == [
        "Hello", ",", "world", "!", "It", "'", "s", "3", ".", "14", ".",
    ]  # fmt: skip
    assert count_tokens("naïve café") == 2  # accented letters stay inside their word
    assert count_tokens("") == 0 and count_tokens("  \n\t ") == 0


def test_chinese_counts_each_character() -> None:
    assert len(REFUND_ZH) == 19 and count_tokens(REFUND_ZH) == 19
    assert count_tokens(REFUND_ZH + "。") == 20
    sentence = "退款通常需要十四个工作日，请耐心等待。"  # 17 Han + a fullwidth comma + a full stop
    assert count_tokens(sentence) == 19
    assert split_tokens("你好，世界！") == ["你", "好", "，", "世", "界", "！"]


def test_japanese_kana_and_kanji_count_per_character() -> None:
    assert split_tokens("東京は「すごい」です。") == [
        "東", "京", "は", "「", "す", "ご", "い", "」", "で", "す", "。",
    ]  # fmt: skip
    assert count_tokens("コーヒー") == 4  # katakana with the prolonged sound mark
    assert count_tokens("ｶﾀｶﾅ") == 4  # halfwidth katakana


def test_korean_syllables_count_one_by_one() -> None:
    assert split_tokens("한국어 문장") == ["한", "국", "어", "문", "장"]


def test_mixed_text_splits_latin_words_from_cjk_characters() -> None:
    assert split_tokens("GPT-4o模型的价格") == ["GPT", "-", "4o", "模", "型", "的", "价", "格"]
    assert split_tokens("第2版") == ["第", "2", "版"]
    assert count_tokens("\U00020000\U0002a700") == 2  # extension B and C ideographs
    assert count_tokens("你\u3000好") == 2  # the ideographic space is a space


def test_a_chinese_prompt_is_not_estimated_far_below_an_english_one_of_the_same_meaning() -> None:
    english = "Refunds take fourteen working days to arrive, please wait patiently."
    chinese = "退款需要十四个工作日才能到账，请耐心等待。"
    assert count_tokens(chinese) >= count_tokens(english)


def test_a_batch_lines_token_share_counts_chinese_characters() -> None:
    """What a batch line takes from a provider's tokens per minute before it is sent."""
    line = ChatInput.model_validate({"messages": [{"role": "user", "content": REFUND_ZH}], "max_tokens": 10})
    assert estimate_tokens(line) == 1 + 19 + 10  # the role "user", the text, max_tokens
