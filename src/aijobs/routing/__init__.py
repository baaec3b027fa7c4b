"""Routing: the ``routing.toml`` schema, the resolved policy, and the Router that runs a route."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aijobs.routing.config import RoutingConfig, load_routing, parse_routing
from aijobs.routing.policy import Feature, Routing, Target, resolve

__all__ = ["Feature", "Routing", "RoutingConfig", "Target", "load_policy", "parse_routing", "resolve"]


def load_policy(path: Path, env: Mapping[str, str]) -> Routing:
    """Load, validate and resolve a routing file against the adapter registry and ``env``."""
    from aijobs.providers.registry import ADAPTERS

    def options_model(kind: str, job_type: str) -> type | None:
        adapter = ADAPTERS.get((kind, job_type))
        return adapter.Options if adapter is not None else None

    return resolve(load_routing(path), env, options_model)
