"""Providers by name. Each entry imports its module only when a recipe uses it (so the openai and
together SDKs are imported only when a provider of theirs is first created).

The `fake` provider is registered here like the real ones, so tests exercise the same selection path.
What an entry needs before its module is imported (its key variable, whether it needs a base URL)
is in the entry; what its class can do is declared on the class (`builders.llm.types.Provider`).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from builders.errors import MissingKeyError
from builders.llm.types import Provider
from builders.recipe import ModelSpec, Recipe
from builders.redact import register_key_variable


@dataclass(frozen=True)
class ProviderEntry:
    factory: str  # "module:Class", imported lazily
    key_env: str | None  # default environment variable holding the API key, None when no key is needed
    needs_base_url: bool = False
    # what `fellowship plan` assumes for time: seconds a live call takes (an answer of a few hundred
    # tokens from a hosted model; the bundled model on two cores, as benchmarks/README.md measured it)
    latency_s: float = 10.0
    batch_window_h: float | None = None  # the batch API's completion window: a job may take this long


PROVIDERS: dict[str, ProviderEntry] = {
    "openai": ProviderEntry("builders.llm.sdk:OpenAIProvider", "OPENAI_API_KEY", batch_window_h=24.0),
    "together": ProviderEntry("builders.llm.sdk:TogetherProvider", "TOGETHER_API_KEY", batch_window_h=24.0),
    "openai-compatible": ProviderEntry("builders.llm.sdk:OpenAICompatibleProvider", None, needs_base_url=True),
    "local": ProviderEntry("builders.llm.local:LocalProvider", None, latency_s=12.0),
    "fake": ProviderEntry("builders.llm.fake:FakeProvider", None, latency_s=0.0),
}
for _entry in PROVIDERS.values():  # their values are never printed or stored (builders.redact)
    register_key_variable(_entry.key_env)


def used_models(recipe: Recipe) -> list[str]:
    g = recipe.generation
    debate = recipe.judge.panel.debate
    entries = [g, *(e for _, e in recipe.compare.entries().values())] if recipe.compare else [g]
    writers = [m for e in entries for m in ([e.generator] if e.generator else []) + list(e.reviewers)]
    names = [*writers, *recipe.judge.panel.models, *(debate.referees.values() if debate else [])]
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
        else:
            problem = provider_class(spec).model_problem(spec.model)
            if problem:
                problems.append(f"models.{name}.model: {problem}")
    return problems


def logprob_problems(recipe: Recipe) -> list[str]:
    """`score_mode: expected` reads token probabilities: judges known to give none are refused now,
    not after the build has paid for their answers."""
    panel = recipe.judge.panel
    if panel.score_mode != "expected":
        return []
    problems = []
    judges = panel.debate.referees.values() if panel.debate else panel.models
    for name in dict.fromkeys(judges):
        spec = recipe.models.get(name)
        if spec is None or spec.provider not in PROVIDERS:
            continue  # reported by the reference and provider checks
        if problem := provider_class(spec).logprobs_problem(spec.model):
            problems.append(f"judge.panel.score_mode: `expected` needs token log probabilities, and models.{name}: "
                            f"{problem} (use score_mode `text` or another judge)")
    return problems


def identity(spec: ModelSpec) -> dict:
    """What names the model whose answers the cache stores (`Provider.identity`: the provider and
    model id, refined by some providers: the bundled local model by its hash, a server's URL)."""
    return provider_class(spec).identity(spec)


def key_problems(recipe: Recipe) -> list[str]:
    problems = []
    for name in used_models(recipe):
        variable = key_variable(recipe.models[name])
        if variable and not os.environ.get(variable):
            problems.append(f"models.{name}: {MissingKeyError(variable, name)}")
    return problems


def provider_class(spec: ModelSpec) -> type[Provider]:
    """The class registered for `spec.provider`, imported on first use."""
    module, cls = PROVIDERS[spec.provider].factory.split(":")
    return getattr(importlib.import_module(module), cls)


def create_provider(name: str, spec: ModelSpec) -> Provider:
    """Instantiate the provider for recipe model `name`; the key comes from the environment only."""
    api_key = None
    variable = key_variable(spec)
    if variable:
        register_key_variable(variable)
        api_key = os.environ.get(variable)
        if not api_key:
            raise MissingKeyError(variable, name)
    return provider_class(spec)(spec, api_key=api_key)
