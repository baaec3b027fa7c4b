"""routing.toml is validated at startup, with errors that name the offending key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from aijobs.errors import ConfigError
from aijobs.routing import load_policy, parse_routing
from aijobs.routing.config import load_routing
from tests.policies import SIM_NON_CHAT, defaults

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = defaults("c")
BASE = '[features.c]\ntype = "chat"\nroute = ["sim:a"]\n' + SIM_NON_CHAT  # c first: errors name it


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[features.x]\ntype = "chat"\nroute = ["opnai:gpt"]',
            "features.x.route[0]: unknown provider 'opnai'",
        ),
        ('[features.x]\ntype = "chat"\nroute = ["nocolon"]', "features.x.route: route[0] 'nocolon' must be"),
        ('[features.x]\ntype = "chat"\nroute = []', "features.x.route: List should have at least 1 item"),
        ('[features.x]\ntype = "chat"\nlane = "fast"\nroute = ["sim:a"]', "features.x.lane"),
        ('[features.x]\ntype = "chat"\nroute = ["sim:a"]\ntimout_s = 3', "features.x.timout_s: Extra inputs"),
        (
            '[features.x]\ntype = "embed"\nroute = ["sim:a", "sim:b"]',
            "features.x.route: an embed route must use one model",
        ),
        ('[features.X]\ntype = "chat"\nroute = ["sim:a"]', "features.X: a feature name is lowercase"),
        ("[lanes.interactive]\nmax_jobs = 0", "lanes.interactive.max_jobs"),
        ('[providers.s2]\nkind = "sim"\nbatch_api = true', "providers.s2: batch_api: only the openai kind"),
        (
            '[features.x]\ntype = "chat"\nroute = ["sim:a"]\nprovider_batch = true',
            "features.x.provider_batch: needs a chat feature with a target whose provider has batch_api",
        ),
        ('[features.x]\ntype = "chat"\nroute = ["sim:a"]\nattempts = 0', "features.x.attempts"),
        (
            '[features.x]\ntype = "chat"\nroute = ["sim:a"]\ndeadline_s = 400',
            "features.x.deadline_s: 400 s exceeds the interactive lane's job_timeout_s (120 s)",
        ),
    ],
)
def test_bad_policies_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_routing(BASE + DEFAULTS + extra)


def test_every_job_type_needs_a_default_feature_of_its_type() -> None:
    with pytest.raises(ConfigError, match=r"defaults\.video: every job type needs a default"):
        parse_routing(BASE + DEFAULTS.replace('video = "v"', ""))
    with pytest.raises(ConfigError, match=r"defaults\.video: feature 'c' serves chat"):
        parse_routing(BASE + DEFAULTS.replace('video = "v"', 'video = "c"'))


def test_not_toml_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_routing("[providers")
    with pytest.raises(ConfigError, match="cannot read routing file"):
        load_routing(Path("/nonexistent/routing.toml"))


def test_keys_disable_providers_and_an_empty_route_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    keyed = BASE.replace(
        '[providers.sim]\nkind = "sim"', '[providers.sim]\nkind = "sim"\napi_key_env = "SIM_KEY"'
    )
    path.write_text(keyed + DEFAULTS)
    with pytest.raises(ConfigError, match=r"features.c: no enabled target .*provider keys unset"):
        load_policy(path, {})
    assert load_policy(path, {"SIM_KEY": "x"}).features["c"].targets[0].model == "a"


def test_kinds_without_an_adapter_and_bad_model_options_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(BASE.replace('kind = "sim"', 'kind = "nope"') + DEFAULTS)
    with pytest.raises(
        ConfigError, match=r"features.c.route\[0\]: provider 'sim' \(kind 'nope'\) has no chat"
    ):
        load_policy(path, {})
    path.write_text(BASE + DEFAULTS + "[providers.sim.models.a]\nlatency_ms = -1\n")
    with pytest.raises(ConfigError, match=r"providers\.sim\.models\.a\.latency_ms"):
        load_policy(path, {})


def test_shipped_policies_are_valid() -> None:
    dev = load_policy(ROOT / "routing.dev.toml", {})
    assert {f.name for f in dev.features.values()} >= {
        "support-chat",
        "coding",
        "search",
        "images",
        "chinese",
        "background",
    }
    assert dev.features["background"].lane == "batch"
    assert dev.features["images"].lane == "media"
    production = load_routing(ROOT / "routing.toml")
    keys = {p.api_key_env: "k" for p in production.providers.values() if p.api_key_env}
    resolved = load_policy(ROOT / "routing.toml", keys)
    text_features = [f for f in resolved.features.values() if f.type in ("chat", "embed", "rerank")]
    assert all(t.provider != "sim" for f in text_features for t in f.targets)  # never a stand-in for text
    assert resolved.features["chinese"].targets[0].provider == "qwen"


def test_a_bad_routing_file_stops_the_api_at_startup_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE + DEFAULTS + '[features.x]\ntype = "chat"\nroute = ["ghost:m"]')
    result = subprocess.run(
        [sys.executable, "-m", "aijobs", "api"],
        env={"AIJOBS_ROUTING_FILE": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "features.x.route[0]: unknown provider 'ghost'" in result.stderr


def test_presets_are_checked_when_the_file_loads() -> None:
    from aijobs.providers.presets import PRESETS

    with pytest.raises(ConfigError, match=r"providers\.x\.preset|providers\.x: .*unknown preset 'deepsek'"):
        parse_routing(BASE + DEFAULTS + '[providers.x]\nkind = "openai"\npreset = "deepsek"\n')
    with pytest.raises(ConfigError, match="base_url is required with preset 'azure-openai'"):
        parse_routing(BASE + DEFAULTS + '[providers.x]\nkind = "openai"\npreset = "azure-openai"\n')
    azure = '[providers.x]\nkind = "openai"\npreset = "azure-openai"\n'
    azure += 'base_url = "https://r.openai.azure.com/openai/v1"\n'
    assert parse_routing(BASE + DEFAULTS + azure).providers["x"].preset == "azure-openai"
    wanted = {"openai", "azure-openai", "deepseek", "qwen", "moonshot", "moonshot-global", "zhipu", "doubao"}
    wanted |= {
        "qianfan",
        "spark",
        "minimax",
        "siliconflow",
        "mistral",
        "xai",
        "groq",
        "together",
        "openrouter",
    }
    wanted |= {"ollama", "vllm", "custom"}
    assert wanted <= set(PRESETS)


def test_an_embed_route_on_a_preset_without_embeddings_is_refused() -> None:
    extra = '[providers.ds]\nkind = "openai"\npreset = "deepseek"\n'
    extra += '[features.x]\ntype = "embed"\nroute = ["ds:m"]\n'
    with pytest.raises(
        ConfigError, match=r"features\.x\.route\[0\]: preset 'deepseek' has no embeddings endpoint"
    ):
        parse_routing(BASE + DEFAULTS + extra)


def test_a_lane_table_changes_only_what_it_names() -> None:
    config = parse_routing(BASE + DEFAULTS + "[lanes.batch]\nmax_jobs = 10\n")
    batch = config.lane("batch")
    assert (batch.max_jobs, batch.job_timeout_s, batch.cpu_nice) == (10, 900, 10)
    assert config.lane("interactive").cpu_nice == 0


@pytest.mark.parametrize(("lanes", "nice"), [("batch", 10), ("batch,interactive", 0)])
def test_a_batch_only_worker_lowers_its_cpu_priority(lanes: str, nice: int) -> None:
    # In a child process: niceness can only go up, and the test runner's must not.
    script = (
        "import os, sys\n"
        "from aijobs.routing import parse_routing\n"
        "from aijobs.worker_process import lower_priority\n"
        "routing = parse_routing(sys.stdin.read())\n"
        "before = os.nice(0)\n"
        f"lower_priority(routing, {lanes.split(',')!r})\n"
        "print(os.nice(0) - before)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], input=BASE + DEFAULTS, capture_output=True, text=True, check=True
    )
    assert int(child.stdout) == nice
