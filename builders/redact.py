"""One redaction function for every text Fellowship stores or prints that came from a provider or
from a recipe's configuration: error messages, judge answers, log lines, the dataset card.

`redact` replaces with `[redacted]`:

- the values of the API-key environment variables in use (each provider's default variable,
  every `api_key_env` a loaded recipe names, and `HF_TOKEN`), when at least 8 characters long;
- bearer tokens (`Bearer <token of 16 or more characters>`, as in an echoed `Authorization` header);
- the user info of a URL (`https://user:KEY@host` -> `https://[redacted]@host`);
- the values of key-like query parameters (`?api-key=...`, `&token=...`, `&sig=...`).

It is idempotent, and costs a few regular-expression scans of the text.
"""

from __future__ import annotations

import os
import re

MASK = "[redacted]"
MIN_SECRET_CHARS = 8  # shorter values (a placeholder key such as "x") would mask ordinary text

KEY_VARIABLES: set[str] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # providers and recipes add theirs

KEY_PARAMETER = r"(?:api[-_]?key|apikey|key|access[-_]?token|token|secret|client[-_]?secret|password|passwd|pwd|auth|sig|signature|code)"
_KEY_PARAMETER_VALUE = re.compile(rf"([?&;]{KEY_PARAMETER}=)[^&#\s'\"<>]+", re.IGNORECASE)
_USER_INFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/?#\s@'\"<>]+@", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE)  # 16+: not "the bearer of"


def register_key_variable(name: str | None) -> None:
    """Treat the value of environment variable `name` as a secret from now on."""
    if name:
        KEY_VARIABLES.add(name)


def secrets() -> list[str]:
    """The secret values currently in the environment, longest first."""
    values = {os.environ.get(name, "") for name in KEY_VARIABLES}
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every credential Fellowship can recognise replaced by `[redacted]`."""
    if not text:
        return text
    for value in secrets():
        text = text.replace(value, MASK)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    text = _USER_INFO.sub(rf"\g<1>{MASK}@", text)
    return _KEY_PARAMETER_VALUE.sub(rf"\g<1>{MASK}", text)


def url_credentials(url: str) -> str | None:
    """What in `url` is a credential (user info, or a key-like query parameter), or None."""
    if _USER_INFO.search(url):
        return "its user info, user:password@"
    found = _KEY_PARAMETER_VALUE.search(url)
    if found:
        return f"its query parameter '{found.group(1)[1:-1]}'"
    return None
