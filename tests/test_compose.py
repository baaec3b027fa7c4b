"""docker-compose.yml agrees with the code: Docker cannot run here, so the file is checked instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aijobs.cli import build_parser, parse_lanes
from aijobs.routing import load_policy
from aijobs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def default_of(value: str) -> str:
    """``${NAME:-default}`` → ``default`` (what compose uses when NAME is unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_and_redis_persistence() -> None:
    services = compose()["services"]
    assert {"redis", "minio", "minio-init", "api", "worker"} <= set(services)
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def test_every_aijobs_variable_is_a_setting_the_code_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    known = {f"AIJOBS_{name.upper()}" for name in Settings.model_fields} | {"REDIS_URL"}
    for name in ("api", "worker"):
        env = compose()["services"][name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
        for key, value in env.items():
            monkeypatch.setenv(key, default_of(str(value)))
        settings = Settings(_env_file=None)
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.blob_backend == "s3"
        assert settings.s3_endpoint_url == "http://minio:9000"


def test_bucket_credentials_and_ports_line_up() -> None:
    services = compose()["services"]
    env = services["api"]["environment"]
    init = services["minio-init"]
    assert f"local/{env['AIJOBS_S3_BUCKET']}" in init["command"][0]
    assert default_of(env["AIJOBS_S3_ACCESS_KEY_ID"]) == default_of(
        services["minio"]["environment"]["MINIO_ROOT_USER"]
    )
    assert default_of(env["AIJOBS_S3_SECRET_ACCESS_KEY"]) == default_of(
        services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    )
    port = env["AIJOBS_PORT"]
    assert f"{port}:{port}" in services["api"]["ports"]
    assert services["api"]["command"][-1] == port


def test_commands_parse_with_the_real_cli_and_workers_scale() -> None:
    services = compose()["services"]
    parser = build_parser()
    api = parser.parse_args(services["api"]["command"][1:])
    assert api.command == "api" and api.host == "0.0.0.0"
    worker = parser.parse_args(services["worker"]["command"][1:])
    assert parse_lanes(worker.lanes) == ["interactive", "media", "batch", "webhooks"]
    # `--scale worker=N` needs no fixed name and no published port.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_the_default_routing_file_ships_in_the_image_and_resolves() -> None:
    env = compose()["services"]["worker"]["environment"]
    routing_file = default_of(env["AIJOBS_ROUTING_FILE"])
    assert routing_file in (ROOT / "Dockerfile").read_text()
    assert load_policy(ROOT / routing_file, {}).features
