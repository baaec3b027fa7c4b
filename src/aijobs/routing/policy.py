"""The resolved routing policy: features with their enabled targets, checked against the registry.

:func:`resolve` turns a parsed :class:`~aijobs.routing.config.RoutingConfig` into a
:class:`Routing` once at startup. A provider whose key variable is unset is disabled with a warning;
a feature left with no enabled target, a kind with no adapter for a feature's type, or invalid model
options are startup errors naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from aijobs.errors import ConfigError, InvalidRequest
from aijobs.prices import PriceBook, bundled_prices
from aijobs.providers.presets import region_of
from aijobs.routing.config import FeatureConfig, LaneName, ProviderConfig, RoutingConfig

Step = tuple[tuple["Target", float], ...]


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a target is called before the route moves on, and how long to wait in between."""

    attempts: int = 2
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0
    retry_after_cap_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: str
    lane: LaneName
    targets: tuple[Target, ...]
    timeout_s: float
    deadline_s: float | None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Error codes that move the route to its next target; ``None``: each error class's own flag.
    fallback_on: frozenset[str] | None = None
    #: The route in steps: a plain entry is one (target, 1.0); a weighted group is several, ordered
    #: afresh for each job. Empty means one step per target, in order.
    steps: tuple[Step, ...] = ()
    #: Job-level requeues after every target failed transiently, the first after ``requeue_delay_s``.
    requeues: int = 0
    requeue_delay_s: float = 2.0
    budget_usd_per_day: float | None = None
    #: Where jobs go once the day's budget is spent; ``None`` rejects them.
    downgrade: Target | None = None
    #: Chat only: an attempt with no first token by then is a timeout (streaming adapters).
    ttft_timeout_s: float | None = None
    #: Media tasks: whether a submit with an unknown outcome may be repeated (possibly paying twice).
    resubmit_unknown: bool = False

    def reachable(self) -> tuple[Target, ...]:
        """Every target a job of this feature may call: the route's, then the budget downgrade."""
        return (*self.targets, self.downgrade) if self.downgrade else self.targets


@dataclass(frozen=True, slots=True)
class EnabledProvider:
    config: ProviderConfig
    model_options: dict[str, BaseModel]


@dataclass(frozen=True, slots=True)
class Routing:
    """What workers and the API route by. Immutable; built once by :func:`resolve`."""

    config: RoutingConfig
    features: Mapping[str, Feature]
    providers: Mapping[str, EnabledProvider]
    prices: PriceBook = field(default_factory=lambda: PriceBook({}, {}, {"USD": 1.0}))
    warnings: tuple[str, ...] = field(default=())

    def feature_for(self, job_type: str, name: str | None) -> Feature:
        """The feature a job runs under; ``None`` means the type's default. Raises InvalidRequest."""
        if name is None:
            name = self.config.defaults[job_type]  # type: ignore[index]
        feature = self.features.get(name)
        if feature is None:
            known = ", ".join(sorted(f for f, v in self.features.items() if v.type == job_type))
            raise InvalidRequest(f"unknown feature {name!r}; {job_type} features: {known}", param="feature")
        if feature.type != job_type:
            raise InvalidRequest(
                f"feature {name!r} serves {feature.type} jobs, not {job_type}", param="feature"
            )
        return feature

    def reachable(self) -> list[Target]:
        """Every target any feature may call, once each, in name order."""
        return _reachable(self.features.values())


OptionsLookup = Callable[[str, str], type[BaseModel] | None]


def resolve(config: RoutingConfig, env: Mapping[str, str], options_model: OptionsLookup) -> Routing:
    """Check ``config`` against the environment and the adapter registry.

    ``options_model(kind, job_type)`` returns the adapter's ``Options`` model, or ``None`` when the
    kind has no adapter for that type.
    """
    warnings: list[str] = []
    enabled: dict[str, EnabledProvider] = {}
    for name, provider in config.providers.items():
        if provider.api_key_env and not env.get(provider.api_key_env):
            warnings.append(f"providers.{name}: disabled, {provider.api_key_env} is not set")
            continue
        enabled[name] = EnabledProvider(provider, {})
    features = {
        name: _resolve_feature(name, feature, config, enabled, options_model, warnings)
        for name, feature in config.features.items()
    }
    prices = _price_book(config)
    for target in _reachable(features.values()):
        if prices.price(target.provider, target.model) is None:
            warnings.append(
                f"{target}: no price known; its cost is recorded as unknown "
                f"(add [providers.{target.provider}.prices.{target.model}])"
            )
    return Routing(config, features, enabled, prices, tuple(warnings))


def _reachable(features: Iterable[Feature]) -> list[Target]:
    return sorted({t for f in features for t in f.reachable()}, key=str)


def _price_book(config: RoutingConfig) -> PriceBook:
    bundled, usd_per = bundled_prices()
    usd_per = {**usd_per, **config.currencies}
    own = {}
    for name, provider in config.providers.items():
        for model, price in provider.prices.items():
            if price.currency not in usd_per:
                raise ConfigError(
                    f"providers.{name}.prices.{model}.currency: no rate for {price.currency!r}; "
                    f"add it under [currencies] (USD per {price.currency})"
                )
            own[(name, model)] = price
    return PriceBook(own, bundled, usd_per)


def _resolve_feature(
    name: str,
    feature: FeatureConfig,
    config: RoutingConfig,
    enabled: dict[str, EnabledProvider],
    options_model: OptionsLookup,
    warnings: list[str],
) -> Feature:
    enabled_targets: dict[str, Target] = {}
    for i, text in enumerate(feature.flat_route()):
        provider_name, _, model = text.partition(":")
        kind = config.providers[provider_name].kind
        model_cls = options_model(kind, feature.type)
        if model_cls is None:
            raise ConfigError(
                f"features.{name}.route[{i}]: provider {provider_name!r} (kind {kind!r}) "
                f"has no {feature.type} adapter in this build"
            )
        provider = enabled.get(provider_name)
        if provider is None:
            continue
        raw = provider.config.models.get(model)
        if raw is not None and model not in provider.model_options:
            try:
                provider.model_options[model] = model_cls.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(str(p) for p in err["loc"])
                raise ConfigError(f"providers.{provider_name}.models.{model}.{key}: {err['msg']}") from exc
        enabled_targets[text] = Target(provider_name, model)
    steps = _steps(feature, enabled_targets)
    if not steps:
        raise ConfigError(
            f"features.{name}: no enabled target in route {feature.flat_route()} (provider keys unset?)"
        )
    if feature.region:  # preferred region first, the route's order kept within each region
        steps.sort(
            key=lambda step: (
                region_of(*_kind_preset_region(config.providers[step[0][0].provider])) != feature.region
            )
        )
    retry = RetryPolicy(
        feature.attempts, feature.backoff_base_s, feature.backoff_cap_s, feature.retry_after_cap_s
    )
    fallback_on = frozenset(feature.fallback_on) if feature.fallback_on is not None else None
    targets = tuple(target for step in steps for target, _ in step)
    return Feature(
        name, feature.type, feature.lane_name(), targets, feature.timeout_s, feature.deadline_s, retry,
        fallback_on, tuple(steps), feature.requeues, feature.requeue_delay_s, feature.budget_usd_per_day,
        _downgrade(name, feature, config, enabled, options_model, warnings), feature.ttft_timeout_s,
        feature.resubmit_unknown,
    )  # fmt: skip


def _downgrade(
    name: str,
    feature: FeatureConfig,
    config: RoutingConfig,
    enabled: dict[str, EnabledProvider],
    options_model: OptionsLookup,
    warnings: list[str],
) -> Target | None:
    text = feature.downgrade_target()
    if text is None:
        return None
    provider, _, model = text.partition(":")
    if options_model(config.providers[provider].kind, feature.type) is None:
        raise ConfigError(
            f"features.{name}.on_budget_exceeded: provider {provider!r} has no {feature.type} adapter"
        )
    if provider not in enabled:
        warnings.append(f"features.{name}.on_budget_exceeded: {provider} is disabled; over budget rejects")
        return None
    return Target(provider, model)


def _steps(feature: FeatureConfig, enabled: dict[str, Target]) -> list[Step]:
    """The route as steps of enabled targets: one per plain entry, several for a weighted group."""
    steps: list[Step] = []
    for entry in feature.route:
        if isinstance(entry, str):
            pairs = [(entry, 1.0)]
        else:
            pairs = list(zip(entry.targets, entry.weights or [1.0] * len(entry.targets), strict=True))
        step = tuple((enabled[text], weight) for text, weight in pairs if text in enabled)
        if step:
            steps.append(step)
    return steps


def _kind_preset_region(provider: ProviderConfig) -> tuple[str, str | None, str | None]:
    return provider.kind, provider.preset, provider.region
