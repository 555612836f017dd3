"""Take secrets out of text before it is written anywhere: configured values, and passwords in URLs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

# `scheme://user:password@` (user may be empty). The password runs to the last `@` before whitespace, so one
# holding an unescaped `@` is masked whole: masking too much is the safe side.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)\S+@")


class Redactor:
    """Replace every configured secret value, and every password in a `scheme://user:password@` URL, by `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first: no partial leftovers
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def text(self, text: str) -> str:
        """`text` with its secrets masked."""
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)

    def value(self, value: Any) -> Any:
        """Mask the strings inside `value`, recursing into dicts, lists and tuples.

        Numbers, booleans and None pass through; any other object becomes its masked `str()`, since a renderer
        would print it through `str()` unmasked.
        """
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.value(item) for item in value)
        return self.text(str(value))
