"""The catalog: the model names a caller may send, and the feature each one runs under.

On the OpenAI-compatible surface ``model`` is one of::

    support-chat              a feature: its whole route, fallback and budget
    feature/support-chat      the same, spelled so it can never clash with a model name
    gpt-4o-mini               an alias from routing.toml's [aliases]: a feature or a target
    deepseek:deepseek-chat    a target: one provider's model, called under the type's default
                              feature (its timeouts, retries and budget; no fallback)

Anything else is a 404, as OpenAI answers an unknown model.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Collection
from dataclasses import dataclass

from aijobs.errors import InvalidRequest, NotFound
from aijobs.routing import Feature, Routing, Target

#: Targets called directly are remembered (a replaced dataclass each call would be waste); bounded.
MAX_DIRECT = 4_096
#: A direct target's model name: what providers use, and safe in headers, URL paths and usage keys
#: (no leading ``/`` or ``.`` and no ``..`` segment: a name must not walk up the provider's URL).
_MODEL_NAME = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._:/@-]{0,199}")


@dataclass(frozen=True, slots=True)
class Model:
    """One name in ``GET /v1/models``."""

    id: str
    kind: str  # feature | alias | target
    type: str
    resolves_to: str


class Catalog:
    """Resolves ``model`` names; ``served`` holds the (provider, job type) pairs that have adapters."""

    def __init__(self, routing: Routing, served: Collection[tuple[str, str]]) -> None:
        self.routing = routing
        self.served = frozenset(served)
        self._direct: dict[tuple[str, str], Feature] = {}
        #: When the routing was loaded (a model's ``created``, in epoch seconds).
        self.loaded_at = int(time.time())

    def feature(self, model: str, job_type: str) -> Feature:
        """The feature a call naming ``model`` runs under. 404 when unknown, 400 for the wrong type."""
        name = self.routing.config.aliases.get(model, model)
        feature = self.routing.features.get(name.removeprefix("feature/"))
        if feature is None:
            feature = self._direct_feature(model, name, job_type)
        if feature.type != job_type:
            raise InvalidRequest(
                f"model: {model!r} serves {feature.type} requests, not {job_type}", param="model"
            )
        return feature

    def _direct_feature(self, model: str, name: str, job_type: str) -> Feature:
        key = (name, job_type)
        found = self._direct.get(key)
        if found is not None:
            return found
        provider, sep, provider_model = name.partition(":")
        if not sep or not provider_model or provider not in self.routing.providers:
            raise NotFound(
                f"model: {model!r} is not a feature, alias or provider:model target here; "
                "GET /v1/models lists them",
                param="model",
            )
        if not _MODEL_NAME.fullmatch(provider_model) or ".." in provider_model.split("/"):
            raise InvalidRequest(
                f"model: {provider_model!r} is not a model name (letters, digits and . _ : / @ -, "
                "up to 200 characters)",
                param="model",
            )
        if (provider, job_type) not in self.served:
            raise InvalidRequest(f"model: provider {provider!r} serves no {job_type} requests", param="model")
        default = self.routing.feature_for(job_type, None)
        target = Target(provider, provider_model)
        found = dataclasses.replace(default, targets=(target,), steps=(), downgrade=None)
        if len(self._direct) >= MAX_DIRECT:
            self._direct.clear()
        self._direct[key] = found
        return found

    def models(self) -> list[Model]:
        """Every feature, alias and routed target, in that order (each group by name)."""
        features = self.routing.features
        listed = [
            Model(name, "feature", f.type, ", ".join(map(str, f.targets)))
            for name, f in sorted(features.items())
        ]
        for alias, meaning in sorted(self.routing.config.aliases.items()):
            job_type = self._type_of(meaning)
            if job_type is not None:
                listed.append(Model(alias, "alias", job_type, meaning))
        targets: dict[str, Model] = {}
        for feature in features.values():
            for target in feature.reachable():
                targets.setdefault(str(target), Model(str(target), "target", feature.type, str(target)))
        return listed + [targets[name] for name in sorted(targets)]

    def _type_of(self, meaning: str) -> str | None:
        feature = self.routing.features.get(meaning.removeprefix("feature/"))
        if feature is not None:
            return feature.type
        provider = meaning.partition(":")[0]
        return ",".join(sorted(job_type for p, job_type in self.served if p == provider)) or None

    def model(self, model_id: str) -> Model:
        """One listed model by id; 404 otherwise."""
        for entry in self.models():
            if entry.id == model_id:
                return entry
        raise NotFound(f"model: {model_id!r} is not listed here; GET /v1/models lists them", param="model")
