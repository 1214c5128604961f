"""Help text: no `<bool>` on flags, nothing cut at 80 columns, exit codes documented; `whoami` lists the admin's
namespaces as its help says; `login` with a non-terminal stdin reads the token from it (no prompt, never twice)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.cli.conftest import Cli, ControlPlane

VERBS = [[], ["create"], ["list"], ["describe"], ["get"], ["wait"], ["update"], ["pause"], ["scale-to-zero"],
         ["resume"], ["delete"], ["events"], ["logs"], ["chat"], ["hardware"], ["login"], ["whoami"], ["completion"],
         ["token", "revoke"], ["namespace", "create"], ["namespace", "list"]]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: "-".join(v) or "root")
def test_help_has_no_bool_and_fits_80_columns(bare_cli: Cli, verb: list[str]) -> None:
    r = bare_cli(*verb, "--help", env={"COLUMNS": "80"})
    assert r.code == 0, r
    assert "<bool>" not in r.stdout and "{name}" not in r.stdout, r
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r
    assert "…" not in r.stdout and "╭" not in r.stdout, r  # no boxes whose cells are cut
    # Every option is shown whole: its long name starts a line of the options list.
    options = re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", r.stdout, flags=re.M)
    assert "--help" in options, r


def test_exit_codes_are_documented(bare_cli: Cli) -> None:
    root = " ".join(bare_cli("--help", env={"COLUMNS": "200"}).stdout.split())
    assert "3 `wait` found the endpoint paused or scaled to zero" in root and "124" in root and "130" in root
    wait = " ".join(bare_cli("wait", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "exit code 3, on a paused or scaled-to-zero endpoint" in wait and "--wake" in wait and "124" in wait


def test_whoami_shows_the_admins_namespaces(cli: Cli, unique_name: str) -> None:
    org = f"{unique_name[:20]}-team"
    assert cli("namespace", "create", org).code == 0
    r = cli("whoami")
    assert r.code == 0 and r.stdout.startswith("admin (user)"), r
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("namespaces: ")]
    assert "admin" in line.split(": ", 1)[1].split(", ") and org in line, r
    me = yaml.safe_load(cli("whoami", "-o", "yaml").stdout)
    assert "admin" in me["namespaces"] and org in me["namespaces"]


def test_login_reads_the_token_from_a_non_terminal_stdin(bare_cli: Cli, controlplane: ControlPlane) -> None:
    r = bare_cli("login", "--url", controlplane.url, input=controlplane.admin_token + "\n")
    assert r.code == 0, r
    assert "Token" not in r.stderr and "logged in to" in r.stderr and "as admin" in r.stderr, r
    assert controlplane.admin_token not in r.stdout + r.stderr
    assert bare_cli("whoami").stdout.startswith("admin (user)")  # stored
    r = bare_cli("login", "--url", controlplane.url, input="")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "no token on stdin" in r.stderr, r
