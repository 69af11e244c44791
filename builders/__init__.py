"""Fellowship: preference-optimization datasets built as a DVC pipeline of Parquet tables.

The names below are imported on first use, so importing any part of the package (the command line
among them) does not load the whole pipeline."""

import importlib

_EXPORTS = {
    "BuildError": "builders.errors",
    "MissingKeyError": "builders.errors",
    "ProviderError": "builders.errors",
    "RecipeError": "builders.errors",
    "TableError": "builders.errors",
    "load_recipe": "builders.loader",
    "Recipe": "builders.recipe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'builders' has no attribute {name!r}")
