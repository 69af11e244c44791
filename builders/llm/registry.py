"""Providers by name. Each entry imports its module only when a recipe uses it.

The `fake` provider is registered here like the real ones, so tests exercise the same selection path.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from dataclasses import dataclass

from builders.errors import MissingKeyError
from builders.recipe import ModelSpec, Recipe
from builders.llm.types import Provider


FAKE_MODELS = ("auto", "echo", "garbage", "scripted")


@dataclass(frozen=True)
class ProviderEntry:
    factory: str  # "module:Class", imported lazily
    key_env: str | None  # default environment variable holding the API key, None when no key is needed
    needs_base_url: bool = False


PROVIDERS: dict[str, ProviderEntry] = {
    "openai": ProviderEntry("builders.llm.sdk:OpenAIProvider", "OPENAI_API_KEY"),
    "together": ProviderEntry("builders.llm.sdk:TogetherProvider", "TOGETHER_API_KEY"),
    "openai-compatible": ProviderEntry("builders.llm.sdk:OpenAICompatibleProvider", None, needs_base_url=True),
    "local": ProviderEntry("builders.llm.local:LocalProvider", None),
    "fake": ProviderEntry("builders.llm.fake:FakeProvider", None),
}


def used_models(recipe: Recipe) -> list[str]:
    g = recipe.generation
    names = [g.generator, *g.reviewers, *recipe.judge.models]
    return list(dict.fromkeys(names))


def key_variable(spec: ModelSpec) -> str | None:
    entry = PROVIDERS.get(spec.provider)
    return spec.api_key_env or (entry.key_env if entry else None)


def provider_problems(recipe: Recipe) -> list[str]:
    problems = []
    for name, spec in recipe.models.items():
        entry = PROVIDERS.get(spec.provider)
        if entry is None:
            problems.append(f"models.{name}.provider: unknown provider '{spec.provider}' (known: {', '.join(PROVIDERS)})")
        elif entry.needs_base_url and not spec.base_url:
            problems.append(f"models.{name}.base_url: the {spec.provider} provider needs a base_url")
        elif spec.provider == "fake" and spec.model not in FAKE_MODELS:
            problems.append(f"models.{name}.model: unknown fake model '{spec.model}' (known: {', '.join(FAKE_MODELS)})")
        elif spec.provider == "local" and spec.model != "default" and not Path(spec.model).expanduser().is_file():
            problems.append(f"models.{name}.model: local model file {spec.model} does not exist (use `default` or a GGUF path)")
    return problems


def identity(spec: ModelSpec) -> dict:
    """What names the model whose answers the cache stores: the bundled local model by its hash, and
    an openai-compatible model by its server too (two servers may serve different models under one name)."""
    model = spec.model
    if spec.provider == "local" and model == "default":
        from builders.llm.local import DEFAULT_MODEL_SHA256

        model = f"default@sha256:{DEFAULT_MODEL_SHA256}"
    endpoint = spec.base_url if spec.provider == "openai-compatible" else None
    return {"provider": spec.provider, "model": model, "endpoint": endpoint}


def key_problems(recipe: Recipe) -> list[str]:
    problems = []
    for name in used_models(recipe):
        variable = key_variable(recipe.models[name])
        if variable and not os.environ.get(variable):
            problems.append(f"models.{name}: {MissingKeyError(variable, name)}")
    return problems


def create_provider(name: str, spec: ModelSpec) -> Provider:
    """Instantiate the provider for recipe model `name`; the key comes from the environment only."""
    entry = PROVIDERS[spec.provider]
    api_key = None
    variable = key_variable(spec)
    if variable:
        api_key = os.environ.get(variable)
        if not api_key:
            raise MissingKeyError(variable, name)
    module, cls = entry.factory.split(":")
    return getattr(importlib.import_module(module), cls)(spec, api_key=api_key)
