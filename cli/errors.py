"""The CLI's error types: everything a command can fail with, each carrying the one line the user sees.

    CliError                  one clear line on stderr, exit code `exit_code` (1 unless said otherwise)
    ├── ConfigError           a bad or unreadable config file / setting
    ├── WaitFailed            `wait` saw `failed` / `updateFailed`
    ├── WaitTimeout           `wait` ran out of time (exit code 124, like coreutils `timeout`)
    ├── NotRunning            `wait` found the endpoint paused or scaled to zero (exit code 3): nothing would wake it
    ├── MissingComponent      a verb whose implementation lives in a module that is not there
    └── MissingExtra          a verb whose dependencies come with an extra that is not installed

The HTTP client's errors are `controlplane.client.ControlPlaneError`s (the SDK raises the same ones): unreachable,
an error status with the server's message, an invalid name (exit code 2). `cli.main.main` is the single place that
turns all of these into output and an exit code; commands only raise. Exceptions of the other libraries we call
(openai) are translated into these at the boundary (`raise ... from`).
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


class WaitFailed(CliError):
    """The endpoint reached a terminal failure state while we waited."""


class WaitTimeout(CliError):
    """The endpoint did not become ready in time."""

    exit_code = 124


class NotRunning(CliError):
    """`wait` found the endpoint paused or scaled to zero: it would poll forever, since nothing is waking it."""

    exit_code = 3


# Exit codes, shown in `--help` (the root's and `wait`'s).
EXIT_CODES = ("Exit codes: 0 success, 1 error (one line on stderr), 2 bad usage, 3 `wait` found the endpoint paused "
              "or scaled to zero, 124 `wait` timed out, 130 interrupted (Ctrl-C).")


def with_hint(exc: Exception, message: str) -> str:
    """`message` plus what to do about it: a 401 (no token, or a bad one) says where the CLI takes a token from,
    instead of the API's "send 'Authorization: Bearer <token>'", which is advice for raw HTTP."""
    if getattr(exc, "status_code", None) == 401:
        message = message.split(": send 'Authorization", 1)[0]
        return f"{message}; pass --token, set ENDPOINTCTL_TOKEN or run `endpointctl login`"
    return message


class MissingComponent(CliError):
    """A verb backed by a module that is not available in this installation."""


class MissingExtra(CliError):
    """A verb that needs dependencies of an extra (`server`, `kubernetes`, `runtime`) this installation lacks."""

    def __init__(self, verb: str, extras: tuple[str, ...]) -> None:
        names = " and ".join(extras)
        super().__init__(f"{verb} needs the {names} extra{'s' if len(extras) > 1 else ''}: "
                         f"pip install 'endpointctl[{','.join(extras)}]'")
        self.extras = extras
