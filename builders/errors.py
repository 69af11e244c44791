"""Errors a user can act on. The CLI prints them as one line and exits 1; anything else is a bug."""

from builders.redact import redact


def first_line(e: BaseException) -> str:
    """An exception's message as one line: its first non-empty line, or its type's name."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class BuildError(Exception):
    """Base class for every error the user can act on."""


class RecipeError(BuildError):
    """A recipe or its inputs are wrong. Deterministic: found before any LLM call, never retried."""


class MissingKeyError(BuildError):
    """A provider needs an API key that is not in the environment."""

    def __init__(self, variable: str, model: str):
        self.variable = variable
        super().__init__(f"model '{model}' needs an API key: set the environment variable {variable}")


class ProviderError(BuildError):
    """A provider call failed. `retryable` errors are retried with backoff, the rest fail the stage.
    The message is redacted (builders.redact): a provider may echo the request's credentials."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(redact(message))
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited  # HTTP 429: the model's limiter hears of it


class TableError(BuildError):
    """A table violates its declared schema or primary key, or a stage's input table is missing."""
