"""The CLI's error types: everything a command can fail with, each carrying the one line the user sees.

    CliError                  one clear line on stderr, exit code `exit_code` (1 unless said otherwise)
    ├── ConfigError           a bad or unreadable config file / setting
    ├── ControlPlaneUnreachable  connection refused, DNS, TLS, timeout talking to the control plane
    ├── ApiError              the control plane answered 4xx/5xx; `status` and the server's `error` message
    ├── WaitFailed            `wait` saw `failed` / `updateFailed`
    ├── WaitTimeout           `wait` ran out of time (exit code 124, like coreutils `timeout`)
    └── MissingComponent      a verb whose implementation lives in a package that is not installed / not written

`cli.main.main` is the single place that turns these into output and an exit code; commands only raise.
Exceptions of the libraries we call (httpx, openai) are translated into these at the boundary (`raise ... from`).
"""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on; its message is the whole story, shown without a traceback."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(CliError):
    """The config file or a setting in it is not usable."""


class ControlPlaneUnreachable(CliError):
    """No HTTP answer at all from the control plane (refused, unresolvable, timed out)."""


class ApiError(CliError):
    """The control plane answered with an error status; the message is the server's own `error` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WaitFailed(CliError):
    """The endpoint reached a terminal failure state while we waited."""


class WaitTimeout(CliError):
    """The endpoint did not become ready in time."""

    exit_code = 124


class MissingComponent(CliError):
    """A verb backed by a module that is not available in this installation."""
