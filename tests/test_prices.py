"""Prices: the bundled table, routing.toml overrides, currency conversion and the cost arithmetic."""

from __future__ import annotations

import pytest

from aijobs.errors import ConfigError
from aijobs.prices import Price, PriceBook, bundled_prices
from aijobs.providers.registry import ADAPTERS
from aijobs.routing import resolve
from aijobs.routing.config import parse_routing
from aijobs.types.common import Usage
from tests.policies import SIM_NON_CHAT, defaults

BOOK = PriceBook(
    {("mine", "chat-model"): Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_per_mtok=0.5)},
    {
        "chat-model": Price(input_per_mtok=100.0, output_per_mtok=100.0),
        "yuan-model": Price(currency="CNY", input_per_mtok=10.0, output_per_mtok=20.0),
        "painter": Price(per_image=0.04),
        "voice": Price(per_audio_s=0.001),
        "movie": Price(per_video_s=0.5, input_per_mtok=1.0, output_per_mtok=1.0),
        "ranker": Price(per_search_unit=0.002),
    },
    {"USD": 1.0, "CNY": 0.14},
)


def test_tokens_are_priced_with_cached_input_at_its_own_rate() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=500_000)
    # 600k fresh x $2 + 400k cached x $0.5 + 500k out x $8
    assert BOOK.cost_usd("mine", "chat-model", "chat", usage) == pytest.approx(1.2 + 0.2 + 4.0)


def test_a_providers_own_price_wins_over_the_bundled_one() -> None:
    usage = Usage(input_tokens=1_000_000)
    assert BOOK.cost_usd("mine", "chat-model", "chat", usage) == pytest.approx(2.0)
    assert BOOK.cost_usd("other", "chat-model", "chat", usage) == pytest.approx(100.0)


def test_other_currencies_are_converted_to_usd() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert BOOK.cost_usd("x", "yuan-model", "chat", usage) == pytest.approx((10 + 20) * 0.14)


@pytest.mark.parametrize(
    ("model", "job_type", "units", "expected"),
    [("painter", "image", 3, 0.12), ("voice", "speech", 12.5, 0.0125), ("ranker", "rerank", 2, 0.004)],
)
def test_media_and_search_units_are_priced_by_job_type(
    model: str, job_type: str, units: float, expected: float
) -> None:
    assert BOOK.cost_usd("x", model, job_type, Usage(units=units)) == pytest.approx(expected)


def test_a_video_priced_by_seconds_and_tokens_adds_both() -> None:
    usage = Usage(units=4, input_tokens=1_000_000)
    assert BOOK.cost_usd("x", "movie", "video", usage) == pytest.approx(2.0 + 1.0)


def test_an_unknown_price_is_none_never_zero() -> None:
    assert BOOK.cost_usd("x", "nobody-knows", "chat", Usage(input_tokens=5)) is None
    assert BOOK.cost_usd("x", "painter", "chat", Usage(input_tokens=5)) is None  # no token price
    assert BOOK.cost_usd("x", "nobody-knows", "chat", Usage()) == 0.0  # nothing consumed


def test_usage_reported_as_nothing_is_free_but_an_estimate_of_nothing_is_unknown() -> None:
    # Cohere answering search_units: 0 billed nothing
    assert BOOK.cost_usd("x", "ranker", "rerank", Usage(units=0)) == 0.0
    # a video whose provider reported no usage, and no duration to count: not free, unknown
    assert BOOK.cost_usd("x", "movie", "video", Usage(estimated=True)) is None
    # an estimate that counted something is priced like any usage (and stays marked estimated)
    assert BOOK.cost_usd("x", "ranker", "rerank", Usage(units=1, estimated=True)) == pytest.approx(0.002)


def test_the_bundled_table_is_complete_and_consistent() -> None:
    models, usd_per = bundled_prices()
    assert usd_per["USD"] == 1.0 and 0.05 < usd_per["CNY"] < 0.5
    assert len(models) >= 10
    for name, price in models.items():
        assert price.currency in usd_per, name
        assert price.source.startswith("https://"), name
        priced = [v for k, v in price.model_dump().items() if k.startswith(("input", "output", "per_"))]
        assert any(v is not None for v in priced), name


BASE = SIM_NON_CHAT + '[features.c]\ntype = "chat"\nroute = ["sim:a"]\n' + defaults("c")


def _options_model(kind: str, job_type: str) -> type | None:
    adapter = ADAPTERS.get((kind, job_type))
    return adapter.Options if adapter is not None else None


def _resolve(extra: str) -> PriceBook:
    return resolve(parse_routing(BASE + extra), {}, _options_model).prices


def test_routing_toml_prices_and_currencies_are_used() -> None:
    book = _resolve(
        '[providers.sim.prices.a]\ncurrency = "EUR"\ninput_per_mtok = 1.0\n[currencies]\nEUR = 1.1\n'
    )
    assert book.cost_usd("sim", "a", "chat", Usage(input_tokens=1_000_000)) == pytest.approx(1.1)


def test_a_price_in_an_unknown_currency_is_a_startup_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"providers\.sim\.prices\.a\.currency: no rate for 'EUR'"):
        _resolve('[providers.sim.prices.a]\ncurrency = "EUR"\ninput_per_mtok = 1.0\n')


def test_a_misspelt_price_field_is_a_startup_error() -> None:
    with pytest.raises(ConfigError, match=r"providers\.sim\.prices\.a\.input_per_token"):
        parse_routing(BASE + "[providers.sim.prices.a]\ninput_per_token = 1.0\n")
