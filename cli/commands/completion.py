"""`completion bash|zsh|fish`: the shell script that completes verbs, options and choices.

The script is Typer's (what `--show-completion` would print): the shell calls `endpointctl` with
`_ENDPOINTCTL_COMPLETE=complete_<shell>` and the words typed so far, and Typer answers from the command tree, so
nothing is generated ahead of time and the script never goes stale. Typer's completion classes are registered only
when the shell asks (the variable is set), so an ordinary start imports nothing more. Printing it (rather than editing rc files)
lets the user choose where it goes, as `kubectl completion` does.
"""

from __future__ import annotations

import enum
import os
import sys
from typing import Annotated

import typer

from cli.app import app

COMPLETE_VAR = "_ENDPOINTCTL_COMPLETE"

if os.environ.get(COMPLETE_VAR):
    from typer._completion_classes import completion_init

    completion_init()


class Shell(str, enum.Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


INSTALL = {
    Shell.bash: "eval \"$(endpointctl completion bash)\"   # in ~/.bashrc",
    Shell.zsh: "eval \"$(endpointctl completion zsh)\"    # in ~/.zshrc, after compinit",
    Shell.fish: "endpointctl completion fish > ~/.config/fish/completions/endpointctl.fish",
}


@app.command(rich_help_panel="Setup", epilog="Install: " + "; ".join(INSTALL.values()))
def completion(shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", case_sensitive=False)]) -> None:
    """Print the shell completion script (source it from your shell's rc file)."""
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name="endpointctl", complete_var=COMPLETE_VAR, shell=shell.value)
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
