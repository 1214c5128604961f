"""Entry point of the `endpointctl` console script: builds the app and is the one place errors become exit codes.

Commands raise `CliError`s, and the HTTP client (shared with the SDK) raises `ControlPlaneError`s; here they become
one line on stderr and an exit code. Usage errors stay
Click's (exit 2, with the usage line). Anything unexpected is still one line (the traceback only with
ENDPOINTCTL_DEBUG=1), because a CLI that dumps a stack trace tells the user nothing they can act on.
"""

from __future__ import annotations

import os
import sys

import typer

from cli.app import app
from cli.commands import catalog, chat, completion, config, dev, endpoints, hardware, logs, namespaces, tokens  # noqa: F401  (registers the verbs)
from cli.errors import CliError, with_hint
from cli.output import err
from controlplane.client import ControlPlaneError, InvalidName


def _fail(text: str, code: int) -> None:
    err.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    debug = os.environ.get("ENDPOINTCTL_DEBUG") not in (None, "", "0")
    try:
        app(args=argv, prog_name="endpointctl")
    except CliError as exc:
        if debug:
            raise
        _fail(exc.message, exc.exit_code)
    except ControlPlaneError as exc:
        if debug:
            raise
        _fail(with_hint(exc, exc.message), 2 if isinstance(exc, InvalidName) else 1)
    except BrokenPipeError:
        # The reader went away (`endpointctl list -o json | head -1`): stop quietly, as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except typer.Abort:
        _fail("aborted", 1)
    except Exception as exc:  # the last line of defence against a traceback; see the module docstring
        if debug:
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set ENDPOINTCTL_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    main()
