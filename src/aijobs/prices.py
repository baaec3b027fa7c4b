"""Prices and estimated cost.

A price belongs to a model and is written in its own currency. :class:`PriceBook` finds a target's
price (the provider's own ``[providers.<name>.prices.<model>]`` in routing.toml first, then the bundled
table ``prices.toml``), and :meth:`PriceBook.cost_usd` turns an attempt's usage into dollars:

- tokens: ``(input - cached) * input + cached * cached + output * output`` per million (input counts
  include cached ones, OpenAI's convention, which the adapters follow);
- units: images * ``per_image``, seconds * ``per_audio_s`` / ``per_video_s``, search units *
  ``per_search_unit``, by job type.

A cost is ``None`` (unknown, and flagged as such in the ledger) when the target has no price, when
its price has nothing that applies to the usage, or when the usage is an estimate that counted
nothing (the provider reported nothing and there was nothing to estimate from); it is never silently
zero. Usage the provider reported as nothing (Cohere's ``search_units: 0``) costs ``0.0``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aijobs.types.common import Usage

_UNIT_PRICE = {
    "image": "per_image",
    "speech": "per_audio_s",
    "video": "per_video_s",
    "rerank": "per_search_unit",
}
_PER_MILLION = 1_000_000


class Price(BaseModel):
    """One model's list price. Token prices are per million tokens; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cached_per_mtok: float | None = Field(default=None, ge=0, description="Default: the input price.")
    per_image: float | None = Field(default=None, ge=0)
    per_audio_s: float | None = Field(default=None, ge=0)
    per_video_s: float | None = Field(default=None, ge=0)
    per_search_unit: float | None = Field(default=None, ge=0)
    source: str = ""


class PriceBook:
    """Prices by (provider, model), converted to USD with ``usd_per`` (USD per unit of a currency)."""

    def __init__(
        self,
        own: Mapping[tuple[str, str], Price],
        bundled: Mapping[str, Price],
        usd_per: Mapping[str, float],
    ) -> None:
        self._own = own
        self._bundled = bundled
        self._usd_per = usd_per

    def price(self, provider: str, model: str) -> Price | None:
        """``provider``'s own price for ``model``, else the bundled one, else ``None``."""
        return self._own.get((provider, model)) or self._bundled.get(model)

    def cost_usd(self, provider: str, model: str, job_type: str, usage: Usage) -> float | None:
        """The estimated cost of ``usage`` in USD; ``None`` when no price applies."""
        if not (usage.input_tokens or usage.output_tokens or usage.units):
            return None if usage.estimated else 0.0
        price = self.price(provider, model)
        if price is None:
            return None
        cost = _token_cost(price, usage)
        unit_field = _UNIT_PRICE.get(job_type)
        unit_price = getattr(price, unit_field) if unit_field else None
        if unit_price is not None and usage.units:
            cost = (cost or 0.0) + unit_price * usage.units
        if cost is None:
            return None
        return round(cost * self._usd_per[price.currency], 10)


def _token_cost(price: Price, usage: Usage) -> float | None:
    if not (usage.input_tokens or usage.output_tokens):
        return None
    if price.input_per_mtok is None and price.output_per_mtok is None:
        return None
    input_price = price.input_per_mtok or 0.0
    cached_price = price.cached_per_mtok if price.cached_per_mtok is not None else input_price
    cached = min(usage.cached_tokens, usage.input_tokens)
    total = (usage.input_tokens - cached) * input_price + cached * cached_price
    total += usage.output_tokens * (price.output_per_mtok or 0.0)
    return total / _PER_MILLION


def bundled_prices() -> tuple[dict[str, Price], dict[str, float]]:
    """The bundled table: prices by model id, and USD per unit of each currency it uses."""
    raw: dict[str, Any] = tomllib.loads(resources.files("aijobs").joinpath("prices.toml").read_text("utf-8"))
    models = {name: Price.model_validate(entry) for name, entry in raw["models"].items()}
    return models, {code: float(rate) for code, rate in raw["currencies"].items()}
