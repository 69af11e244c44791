"""Fellowship: preference-optimization datasets built as a DVC pipeline of Parquet tables."""

from builders.errors import BuildError, MissingKeyError, ProviderError, RecipeError, TableError
from builders.loader import load_recipe
from builders.recipe import Recipe

__all__ = [
    "BuildError",
    "MissingKeyError",
    "ProviderError",
    "Recipe",
    "RecipeError",
    "TableError",
    "load_recipe",
]
