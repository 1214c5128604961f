"""The one step every text derived from replica output passes before it is stored or shown: secret values out.

A replica may echo its environment (a bad value in a start-up error, a crash dump), and that text flows into
`status.message`, conditions, events and logs. Redaction knows the endpoint's secret values, not their names, so a
secret is masked wherever the replica put it. Very short values are left alone: masking every "1" in a message
would destroy it and hide nothing a reader could not guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"
MIN_SECRET_LENGTH = 3


class Redactor:
    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if not value or len(value) < MIN_SECRET_LENGTH:
                continue
            forms.add(value)
            # The same value as it appears inside JSON or a Python repr (a log line may hold either).
            forms.add(json.dumps(value)[1:-1])
            forms.add(repr(value)[1:-1])
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str | None) -> str | None:
        if not text or not self._forms:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def conditions(self, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**c, "message": self(c.get("message"))} if c.get("message") else c for c in conditions]


def redactor_for(secrets: Mapping[str, Any] | None, credentials: Mapping[str, Any] | None = None) -> Redactor:
    """A redactor for one endpoint: its model secrets and its registry password."""
    values = [str(v) for v in (secrets or {}).values() if v is not None]
    if credentials and credentials.get("password"):
        values.append(str(credentials["password"]))
    return Redactor(values)
