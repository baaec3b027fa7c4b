"""Region preference and ``fallback_on``: the route order a feature asks for, and where it moves on."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from aijobs.providers.registry import build_adapters
from aijobs.routing import load_policy
from aijobs.routing.router import RouteFailed, Router
from aijobs.types.chat import ChatInput
from tests.policies import SIM_NON_CHAT, defaults

CHAT = ChatInput.model_validate({"messages": [{"role": "user", "content": "你好"}]})


def policy_file(tmp_path: Path, llmock_url: str, feature: str) -> Path:
    base = f"{llmock_url}/v1"
    text = f"""
[providers.openai]
kind = "openai"
preset = "openai"
base_url = "{base}"
[providers.deepseek]
kind = "openai"
preset = "deepseek"
base_url = "{base}"
[providers.claude]
kind = "anthropic"
base_url = "{llmock_url}/anthropic"
[providers.qwen-proxy]
kind = "openai"
preset = "custom"
region = "cn"
base_url = "{base}"
{feature}
{SIM_NON_CHAT}
{defaults("x")}
"""
    path = tmp_path / "routing.toml"
    path.write_text(text)
    return path


ROUTE = (
    'route = ["openai:gpt-4o-mini", "deepseek:deepseek-chat", "claude:claude-sonnet-4-5", "qwen-proxy:qwen"]'
)


@pytest.mark.parametrize(
    ("region", "order"),
    [
        ("cn", ["deepseek", "qwen-proxy", "openai", "claude"]),
        ("global", ["openai", "claude", "deepseek", "qwen-proxy"]),
        (None, ["openai", "deepseek", "claude", "qwen-proxy"]),
    ],
)
def test_a_feature_tries_its_region_first(tmp_path: Path, region: str | None, order: list[str]) -> None:
    preference = f'region = "{region}"' if region else ""
    path = policy_file(
        tmp_path, "http://127.0.0.1:1", f'[features.x]\ntype = "chat"\n{ROUTE}\n{preference}\n'
    )
    feature = load_policy(path, {}).features["x"]
    assert [t.provider for t in feature.targets] == order


async def scenario(llmock_url: str, *behaviors: dict[str, object]) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(llmock_url + "/_llmock/reset")
        await admin.post(llmock_url + "/_llmock/scenario", json={"behaviors": list(behaviors)})


@pytest.mark.parametrize(
    ("region", "first", "then"), [("cn", "deepseek", "openai"), ("global", "openai", "deepseek")]
)
async def test_falling_back_across_regions(
    tmp_path: Path, llmock_url: str, region: str, first: str, then: str
) -> None:
    route = 'route = ["openai:gpt-4o-mini", "deepseek:deepseek-chat"]'
    feature_text = f'[features.x]\ntype = "chat"\n{route}\nregion = "{region}"\nbackoff_base_s = 0\n'
    routing = load_policy(policy_file(tmp_path, llmock_url, feature_text), {})
    await scenario(llmock_url, {"type": "fail", "status": 503, "times": 2})  # the preferred region is down
    async with httpx2.AsyncClient() as http:
        outcome = await Router(build_adapters(routing, http, {})).run(routing.features["x"], CHAT)
    assert [a.provider for a in outcome.attempts] == [first, first, then]
    assert outcome.target.provider == then


async def test_fallback_on_narrows_what_moves_the_route(tmp_path: Path, llmock_url: str) -> None:
    route = 'route = ["openai:gpt-4o-mini", "deepseek:deepseek-chat"]'
    narrow = f'[features.x]\ntype = "chat"\n{route}\nfallback_on = ["provider_unavailable"]\n'
    routing = load_policy(policy_file(tmp_path, llmock_url, narrow), {})
    await scenario(llmock_url, {"type": "fail", "status": 401})
    async with httpx2.AsyncClient() as http:
        with pytest.raises(RouteFailed) as failed:
            await Router(build_adapters(routing, http, {})).run(routing.features["x"], CHAT)
    assert [a.provider for a in failed.value.attempts] == ["openai"]  # a bad key is not in its list
    default = load_policy(policy_file(tmp_path, llmock_url, f'[features.x]\ntype = "chat"\n{route}\n'), {})
    await scenario(llmock_url, {"type": "fail", "status": 401})
    async with httpx2.AsyncClient() as http:
        outcome = await Router(build_adapters(default, http, {})).run(default.features["x"], CHAT)
    assert outcome.target.provider == "deepseek"  # by default an auth error falls back


def test_fallback_on_takes_only_provider_codes(tmp_path: Path) -> None:
    from aijobs.errors import ConfigError

    bad = '[features.x]\ntype = "chat"\nroute = ["openai:gpt-4o-mini"]\nfallback_on = ["gateway_canceled"]\n'
    with pytest.raises(ConfigError, match=r"features\.x\.fallback_on\.0"):
        load_policy(policy_file(tmp_path, "http://127.0.0.1:1", bad), {})


GROUP = """
[features.x]
type = "chat"
route = [
  {targets = ["openai:gpt-4o-mini", "deepseek:deepseek-chat"], weights = [3, 1]},
  "claude:claude-sonnet-4-5",
]
"""


def test_a_weighted_group_spreads_first_tries_by_weight(tmp_path: Path) -> None:
    import random

    routing = load_policy(policy_file(tmp_path, "http://127.0.0.1:1", GROUP), {})
    feature = routing.features["x"]
    router = Router({}, random.Random(42))
    orders = [router.order(feature) for _ in range(4000)]
    first_openai = sum(order[0].provider == "openai" for order in orders) / len(orders)
    assert 0.71 < first_openai < 0.79  # weights 3:1
    assert all(order[2].provider == "claude" for order in orders)  # a plain entry keeps its place
    assert all({t.provider for t in order[:2]} == {"openai", "deepseek"} for order in orders)


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            '[{targets = ["openai:a", "deepseek:b"], weights = [1]}]',
            "weights must give one number per target",
        ),
        ('[{targets = ["openai:a", "deepseek:b"], weights = [1, 0]}]', "weights must be positive"),
        ('[{targets = ["openai:a"]}]', "at least 2 items"),
        ('[{targets = ["openai:a", "deepseek:b"]}, "openai:a"]', "route lists a target twice"),
    ],
)
def test_bad_groups_are_refused(tmp_path: Path, route: str, message: str) -> None:
    from aijobs.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_policy(
            policy_file(tmp_path, "http://127.0.0.1:1", f'[features.x]\ntype = "chat"\nroute = {route}\n'), {}
        )


def test_a_group_keeps_only_its_enabled_targets(tmp_path: Path) -> None:
    text = policy_file(tmp_path, "http://127.0.0.1:1", GROUP).read_text()
    keyed = text.replace('preset = "openai"', 'preset = "openai"\napi_key_env = "NO_SUCH_KEY"')
    (tmp_path / "keyed.toml").write_text(keyed)
    feature = load_policy(tmp_path / "keyed.toml", {}).features["x"]
    assert [t.provider for t in feature.targets] == ["deepseek", "claude"]
