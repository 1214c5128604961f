"""Which extras a verb needs, checked against the installed distribution before the verb imports anything heavy.

`pip install endpointctl` is the CLI and the SDK; `up`, `demo`, `runtime serve`, `dev model`, `dev tiny-model` and
`dev cluster` run code from the `server` / `kubernetes` / `runtime` extras (pyproject.toml). Rather than let such a
verb die on an ImportError deep inside torch or SQLAlchemy, `require` reads the extra's requirements from the
installed metadata (so pyproject.toml stays the one list) and raises `MissingExtra`, which `cli.main` prints as one
line naming the extra to install. A checkout used without being installed has no metadata: nothing is checked then.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, version

from cli.errors import MissingExtra

DISTRIBUTION = "endpointctl"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


@cache
def _requirements_by_extra() -> dict[str, tuple[str, ...]] | None:
    """Distribution names each extra adds, from the installed metadata; None when endpointctl is not installed."""
    try:
        requires = distribution(DISTRIBUTION).requires or []
    except PackageNotFoundError:
        return None
    by_extra: dict[str, list[str]] = {}
    for requirement in requires:
        requirement_part, _, marker = requirement.partition(";")
        extra = _EXTRA_MARKER.search(marker)
        name = _NAME.match(requirement_part)
        if extra and name and name.group(1).lower() != DISTRIBUTION:
            by_extra.setdefault(extra.group(1), []).append(name.group(1))
    return {extra: tuple(names) for extra, names in by_extra.items()}


def _installed(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def missing_extras(*extras: str) -> tuple[str, ...]:
    """The extras among `extras` with at least one requirement not installed."""
    by_extra = _requirements_by_extra()
    if by_extra is None:
        return ()
    return tuple(extra for extra in extras if not all(_installed(name) for name in by_extra.get(extra, ())))


def require(verb: str, *extras: str) -> None:
    """Raise `MissingExtra` naming every extra of `extras` that `verb` needs and this installation lacks."""
    missing = missing_extras(*extras)
    if missing:
        raise MissingExtra(verb, missing)
