"""The ``routing.toml`` schema and its loader.

Loading happens once at startup and fails with a :class:`~aijobs.errors.ConfigError` whose message
names the offending key (``features.coding.route[1]: unknown provider 'opnai'``). The result is
immutable and passed explicitly to whoever needs it.

Checks that need the adapter registry (does this kind serve this job type? are a model's options
valid?) and the environment (is the provider's key set?) happen in :func:`aijobs.routing.resolve`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aijobs.errors import ConfigError
from aijobs.prices import Price
from aijobs.providers.presets import PRESETS, preset_for
from aijobs.types import FEATURE_PATTERN, JOB_TYPES, JobType

LaneName = Literal["interactive", "media", "batch"]
ProviderCode = Literal[
    "provider_rate_limited",
    "provider_timeout",
    "provider_unavailable",
    "provider_auth",
    "provider_model_not_found",
    "provider_bad_response",
    "provider_rejected",
    "provider_content_filtered",
    "provider_context_window",
]
LANES: tuple[LaneName, ...] = ("interactive", "media", "batch")
#: A lane a worker can serve: the job lanes, and ``webhooks`` (deliveries, never a feature's lane).
WorkerLane = Literal["interactive", "media", "batch", "webhooks"]
WORKER_LANES: tuple[WorkerLane, ...] = (*LANES, "webhooks")
#: A model alias: what OpenAI SDK users put in ``model`` (``gpt-4o-mini``, ``fast``, ``org/model``).
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LaneConfig(_Config):
    """arq settings for one lane's queue. arq's defaults (10 jobs, 0.5 s poll) cap throughput."""

    max_jobs: int = Field(default=1000, ge=1, le=100_000)
    poll_delay_s: float = Field(default=0.05, gt=0, le=5)
    job_timeout_s: float = Field(default=300, gt=0, le=24 * 3600)
    lease_s: float = Field(
        default=10, ge=1, le=300,
        description="How long a claimed job stays its worker's without a renewal (renewed every third of "
        "it): a dead worker's jobs run again within this, whatever their job_timeout_s.",
    )  # fmt: skip
    cpu_nice: int = Field(
        default=0, ge=0, le=19,
        description="How much a worker serving only this lane lowers its CPU priority (Unix nice), so that "
        "on a shared host it yields the CPU to interactive work.",
    )  # fmt: skip


_DEFAULT_LANES = {
    "interactive": LaneConfig(max_jobs=6000, poll_delay_s=0.01, job_timeout_s=120),
    "media": LaneConfig(max_jobs=2000, poll_delay_s=0.05, job_timeout_s=600),
    "batch": LaneConfig(max_jobs=500, poll_delay_s=0.25, job_timeout_s=900, cpu_nice=10),
    # A delivery takes at most its 15 s timeout; 200 slow receivers at once stay cheap on the loop.
    "webhooks": LaneConfig(max_jobs=200, poll_delay_s=0.05, job_timeout_s=30),
}


class WebhookConfig(_Config):
    """How webhook deliveries are attempted (Standard Webhooks; Svix-like retry schedule)."""

    schedule_s: tuple[float, ...] = Field(
        default=(0, 5, 300, 1800, 7200, 18000, 36000, 36000),
        min_length=1,
        max_length=20,
        description="Delay before each attempt, counted from the previous one (the first from the event).",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    timeout_s: float = Field(default=15.0, gt=0, le=120, description="Whole attempt, response included.")
    rotation_overlap_s: float = Field(
        default=86400.0, ge=0, le=30 * 86400, description="How long a rotated-out secret still signs."
    )
    max_endpoints: int = Field(default=20, ge=1, le=1000, description="Registered endpoints per tenant.")

    @field_validator("schedule_s")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(step < 0 for step in value):
            raise ValueError("delays must be 0 or more seconds")
        return value


class TaskConfig(_Config):
    """How long-running tasks (video, async images) of one provider are polled."""

    poll_interval_s: float = Field(default=2.0, gt=0, le=600, description="First poll's delay after submit.")
    poll_interval_cap_s: float = Field(default=15.0, gt=0, le=3600, description="Polls slow down to this.")
    task_timeout_s: float = Field(
        default=1800.0, gt=0, le=7 * 86400, description="A task not done by then fails: provider_timeout."
    )
    max_concurrent_polls: int = Field(default=64, ge=1, le=10_000, description="Per worker process.")
    max_poll_errors: int = Field(
        default=10, ge=1, le=1000, description="Consecutive failed polls before the job fails."
    )


class ProviderConfig(_Config):
    """An upstream account. ``models`` holds per-model options validated by the kind's adapters."""

    kind: str = Field(min_length=1)
    preset: str | None = None
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    region: Literal["cn", "global"] | None = Field(
        default=None, description="Default: the preset's or kind's."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Per read; the Router bounds an attempt."
    )
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Per-model prices; override the bundled table."
    )
    tasks: TaskConfig = Field(default_factory=TaskConfig)
    batch_rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute batch lines may send (all workers together)."
    )
    batch_tpm: int | None = Field(
        default=None, ge=1, description="Tokens per minute batch lines may send (estimated before each call)."
    )
    batch_api: bool = Field(
        default=False,
        description="The provider has its own batch API (OpenAI's protocol): batches of features with "
        "provider_batch are handed to it.",
    )
    batch_price_factor: float = Field(
        default=0.5, gt=0, le=1, description="Its batch API's price, as a share of the synchronous price."
    )
    batch_poll_s: float = Field(
        default=60.0, ge=0.05, le=3600, description="How often a batch there is polled."
    )
    batch_max_lines: int = Field(
        default=50_000,
        ge=1,
        le=50_000,
        description="Most lines one batch there may have; larger batches run here.",
    )

    @model_validator(mode="after")
    def _preset_known(self) -> ProviderConfig:
        if self.batch_api and self.kind != "openai":
            raise ValueError("batch_api: only the openai kind speaks OpenAI's batch protocol")
        if self.kind not in ("openai", "cohere"):  # the kinds whose vendors differ by preset
            return self
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(sorted(PRESETS))}")
        if not self.base_url and not preset_for(self.preset).base_url:
            raise ValueError(f"base_url is required with preset {self.preset!r}")
        return self


class TargetGroup(_Config):
    """Equal targets to spread load over: each job tries them in a weighted random order."""

    targets: list[str] = Field(min_length=2, max_length=16)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights_fit(self) -> TargetGroup:
        if self.weights is not None:
            if len(self.weights) != len(self.targets):
                raise ValueError("weights must give one number per target")
            if any(w <= 0 for w in self.weights):
                raise ValueError("weights must be positive")
        return self


class FeatureConfig(_Config):
    """A product use: which job type it serves, on which lane, through which ordered targets."""

    type: JobType
    lane: LaneName | None = None
    route: list[str | TargetGroup] = Field(min_length=1, max_length=32)
    timeout_s: float = Field(default=60, gt=0, le=3600, description="Per attempt.")
    ttft_timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="Chat: time to the first streamed token, per attempt."
    )
    deadline_s: float | None = Field(default=None, gt=0, le=24 * 3600, description="Whole job.")
    attempts: int = Field(default=2, ge=1, le=10, description="Calls of one target before falling back.")
    region: Literal["cn", "global"] | None = Field(
        default=None, description="Try this region's targets first."
    )
    fallback_on: list[ProviderCode] | None = Field(
        default=None, description="Error codes that move the route on; default: each error's own rule."
    )
    backoff_base_s: float = Field(default=0.5, ge=0, le=60, description="First retry waits up to this.")
    backoff_cap_s: float = Field(default=8.0, ge=0, le=600, description="No backoff wait is longer.")
    retry_after_cap_s: float = Field(default=30.0, ge=0, le=3600, description="Longest Retry-After honoured.")
    requeues: int = Field(
        default=2, ge=0, le=20, description="Times a job whose targets all failed transiently goes back."
    )
    requeue_delay_s: float = Field(default=2.0, ge=0, le=3600, description="First requeue's delay; doubles.")
    budget_usd_per_day: float | None = Field(default=None, gt=0, description="Estimated spend per UTC day.")
    on_budget_exceeded: str = Field(
        default="reject", pattern=r"^(reject|downgrade:[^:]+:.+)$", description="reject | downgrade:<target>"
    )
    resubmit_unknown: bool = Field(
        default=False,
        description="Media tasks: resubmit (retry, fall back) when a submit's outcome is unknown. "
        "It may pay twice.",
    )
    provider_batch: bool = Field(
        default=False,
        description="Batches of this chat feature go to the first target whose provider has batch_api "
        "(cheaper, slower); lines it cannot answer run here.",
    )
    description: str = ""

    def downgrade_target(self) -> str | None:
        """The target a budget-exhausted job runs on, or ``None`` when such jobs are rejected."""
        return self.on_budget_exceeded.partition(":")[2] or None

    @field_validator("route")
    @classmethod
    def _target_shape(cls, route: list[str | TargetGroup]) -> list[str | TargetGroup]:
        flat = [t for entry in route for t in ([entry] if isinstance(entry, str) else entry.targets)]
        for i, target in enumerate(flat):
            provider, sep, model = target.partition(":")
            if not (sep and provider and model):
                raise ValueError(f"route[{i}] {target!r} must be 'provider:model'")
        if len(set(flat)) != len(flat):
            raise ValueError("route lists a target twice")
        return route

    def flat_route(self) -> list[str]:
        """Every target of the route, groups unrolled, in file order."""
        return [t for entry in self.route for t in ([entry] if isinstance(entry, str) else entry.targets)]

    def lane_name(self) -> LaneName:
        """The lane: explicit, else ``media`` for media job types and ``interactive`` for the rest."""
        if self.lane is not None:
            return self.lane
        return "media" if self.type in ("image", "speech", "video") else "interactive"


class BreakerConfig(_Config):
    """Circuit breakers per (provider, model), shared by all workers through Redis."""

    window_s: float = Field(default=60, gt=0, le=3600, description="The rolling window calls are counted in.")
    min_calls: int = Field(default=10, ge=1, le=100_000, description="Fewer calls never open a breaker.")
    failure_ratio: float = Field(default=0.5, gt=0, le=1, description="Failures / calls that open it.")
    cooldown_s: float = Field(default=30, gt=0, le=3600, description="How long an open breaker skips.")
    refresh_s: float = Field(default=1.0, gt=0, le=60, description="How stale a worker's view may be.")


class LedgerConfig(_Config):
    """How long usage records and aggregates are kept, and their daily export to the blob store."""

    retention_days: int = Field(default=35, ge=1, le=3660, description="Daily aggregates (/v1/usage).")
    records_days: int = Field(
        default=3, ge=1, le=366, description="Per-job records in Redis (exported daily)."
    )
    export: bool = Field(default=True, description="Write each finished UTC day to ledger/<day>.jsonl.")

    def ttls_s(self) -> tuple[int, int]:
        """How long (records, aggregates) live in Redis; a day longer than asked, for late readers."""
        return (self.records_days + 1) * 86400, (self.retention_days + 1) * 86400


class RoutingConfig(_Config):
    """The whole file. ``defaults`` maps every job type to the feature used when a job names none."""

    lanes: dict[WorkerLane, LaneConfig] = Field(default_factory=dict)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    currencies: dict[str, float] = Field(
        default_factory=dict, description="USD per unit of a currency; extends the bundled rates."
    )
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    features: dict[str, FeatureConfig] = Field(min_length=1)
    defaults: dict[JobType, str] = Field(default_factory=dict)
    aliases: dict[Annotated[str, Field(pattern=ALIAS_PATTERN)], str] = Field(
        default_factory=dict,
        description="Model names for the OpenAI-compatible surface: alias → feature, "
        "'feature/NAME' or 'provider:model'.",
    )

    @field_validator("lanes", mode="before")
    @classmethod
    def _over_lane_defaults(cls, lanes: Any) -> Any:
        """A lane's table changes only the settings it names; the rest keep that lane's defaults."""
        if not isinstance(lanes, dict):
            return lanes
        return {
            name: {**_DEFAULT_LANES[name].model_dump(), **given}
            if name in _DEFAULT_LANES and isinstance(given, dict) else given
            for name, given in lanes.items()
        }  # fmt: skip

    @model_validator(mode="after")
    def _references(self) -> RoutingConfig:
        for name, feature in self.features.items():
            _check_feature(name, feature, self.providers)
            lane_timeout_s = self.lane(feature.lane_name()).job_timeout_s
            if feature.deadline_s is not None and feature.deadline_s > lane_timeout_s:
                # A worker stops waiting on a job after its lane's timeout; a longer deadline would
                # never be reached.
                raise ValueError(
                    f"features.{name}.deadline_s: {feature.deadline_s:g} s exceeds the "
                    f"{feature.lane_name()} lane's job_timeout_s ({lane_timeout_s:g} s)"
                )
        for alias, meaning in self.aliases.items():
            _check_alias(alias, meaning, self)
        for job_type in JOB_TYPES:
            feature_name = self.defaults.get(job_type)
            if feature_name is None:
                raise ValueError(f"defaults.{job_type}: every job type needs a default feature")
            default = self.features.get(feature_name)
            if default is None:
                raise ValueError(f"defaults.{job_type}: unknown feature {feature_name!r}")
            if default.type != job_type:
                raise ValueError(f"defaults.{job_type}: feature {feature_name!r} serves {default.type}")
        return self

    def lane(self, name: WorkerLane) -> LaneConfig:
        return self.lanes.get(name) or _DEFAULT_LANES[name]


def _check_alias(alias: str, meaning: str, config: RoutingConfig) -> None:
    """An alias names a feature (``NAME`` or ``feature/NAME``) or a target of a configured provider."""
    if alias in config.features:
        raise ValueError(f"aliases.{alias}: a feature has this name; an alias cannot hide it")
    name = meaning.removeprefix("feature/")
    if name in config.features:
        return
    provider, sep, model = meaning.partition(":")
    if not sep or not model:
        raise ValueError(f"aliases.{alias}: {meaning!r} is neither a feature nor a 'provider:model' target")
    if provider not in config.providers:
        raise ValueError(f"aliases.{alias}: unknown provider {provider!r}")


def _check_feature(name: str, feature: FeatureConfig, providers: dict[str, ProviderConfig]) -> None:
    if not re.match(FEATURE_PATTERN, name):
        raise ValueError(f"features.{name}: a feature name is lowercase letters, digits, '-' and '_'")
    for i, target in enumerate(feature.flat_route()):
        provider = target.partition(":")[0]
        if provider not in providers:
            raise ValueError(f"features.{name}.route[{i}]: unknown provider {provider!r}")
    if feature.ttft_timeout_s is not None:
        if feature.type != "chat":
            raise ValueError(f"features.{name}.ttft_timeout_s: only chat features stream tokens")
        if feature.ttft_timeout_s > feature.timeout_s:
            raise ValueError(f"features.{name}.ttft_timeout_s: longer than the attempt's timeout_s")
    downgrade = feature.downgrade_target()
    if downgrade is not None and downgrade.partition(":")[0] not in providers:
        raise ValueError(
            f"features.{name}.on_budget_exceeded: unknown provider {downgrade.partition(':')[0]!r}"
        )
    for i, target in enumerate(feature.flat_route()):
        spec = providers[target.partition(":")[0]]
        if feature.type == "embed" and spec.kind == "openai" and not preset_for(spec.preset).embeddings:
            raise ValueError(f"features.{name}.route[{i}]: preset {spec.preset!r} has no embeddings endpoint")
    if feature.provider_batch and (
        feature.type != "chat"
        or not any(providers[t.partition(":")[0]].batch_api for t in feature.flat_route())
    ):
        raise ValueError(
            f"features.{name}.provider_batch: needs a chat feature with a target whose provider has batch_api"
        )
    if feature.type == "embed" and len({t.partition(":")[2] for t in feature.flat_route()}) > 1:
        # Vectors from different models live in different spaces; a fallback would silently
        # corrupt the caller's index.
        raise ValueError(f"features.{name}.route: an embed route must use one model throughout")


def parse_routing(text: str, source: str = "routing.toml") -> RoutingConfig:
    """Parse and validate routing TOML text; errors name the key and the file."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return RoutingConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {message}" if key else message)
        raise ConfigError(f"{source}: " + "; ".join(problems)) from exc


def load_routing(path: Path) -> RoutingConfig:
    """Read and validate a routing file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read routing file {path}: {exc.strerror}") from exc
    return parse_routing(text, str(path))
