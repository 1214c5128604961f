"""Tables fit the terminal like `kubectl get`: one line per row at any COLUMNS (optional columns dropped, long
cells cut with "…"), `-o wide` for every column whole, and `list -A` with a NAMESPACE column covering every
namespace the token can see."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli

LONG_MODEL = "/models/" + "a-rather-long-organisation-name/and-an-even-longer-model-repository-name-v2"


def _create(cli: Cli, name: str, *extra: str, repository: str = LONG_MODEL) -> None:
    r = cli("create", name, "--repository", repository, "--task", "text-generation", *extra)
    assert r.code == 0, r


def _rows(stdout: str) -> list[str]:
    return [line.rstrip() for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("columns", [80, 120])
def test_list_fits_the_terminal_one_line_per_endpoint(cli: Cli, unique_name: str, columns: int) -> None:
    names = [f"{unique_name}-{i}" for i in range(2)]
    for name in names:
        _create(cli, name)
    r = cli("list", env={"COLUMNS": str(columns)})
    assert r.code == 0, r
    lines = _rows(r.stdout)
    assert all(len(line) <= columns for line in lines), r
    assert lines[0].split()[:4] == ["NAME", "STATUS", "REPLICAS", "MODEL"], r
    for name in names:
        # Each endpoint on exactly one line, its name whole and its model cut, never folded onto a second line.
        (row,) = [line for line in lines if name in line]
        assert row.startswith(name + " ") and " pending " in row and "…" in row, r
    assert not any(line.startswith(" ") for line in lines[1:]), r  # no continuation lines


def test_wide_shows_every_column_whole(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    r = cli("list", "-o", "wide", env={"COLUMNS": "80"})
    assert r.code == 0, r
    lines = _rows(r.stdout)
    assert lines[0].split() == ["NAME", "STATUS", "REPLICAS", "MODEL", "TASK", "FRAMEWORK", "INSTANCE", "VENDOR",
                                "REGION", "URL"], r
    (row,) = [line for line in lines if line.startswith(unique_name + " ")]
    assert LONG_MODEL in row and "text-generation" in row and "…" not in row, r
    # A global -o wide before the verb means the same.
    assert cli("-o", "wide", "list", env={"COLUMNS": "80"}).stdout == r.stdout


def test_a_pipe_gets_whole_lines_and_a_narrow_terminal_drops_optional_columns(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    r = cli("list")  # no COLUMNS, not a terminal: nothing is cut
    (row,) = [line for line in _rows(r.stdout) if line.startswith(unique_name + " ")]
    assert LONG_MODEL in row and "cpu-x1" in row, r
    narrow = cli("list", env={"COLUMNS": "60"})
    header = _rows(narrow.stdout)[0].split()
    assert "INSTANCE" not in header and "URL" not in header and header[:3] == ["NAME", "STATUS", "REPLICAS"], narrow
    assert all(len(line) <= 60 for line in _rows(narrow.stdout)), narrow


def test_list_all_namespaces_has_a_namespace_column_and_every_namespace(cli: Cli, unique_name: str) -> None:
    org = f"{unique_name[:20]}-org"
    r = cli("namespace", "create", org)
    assert r.code == 0 and f"namespace {org} (org) created" in r.stderr, r
    _create(cli, unique_name, repository="/models/tiny")
    _create(cli, "acme-ep", "-n", org, repository="/models/tiny")
    r = cli("list", "-A", env={"COLUMNS": "120"})
    assert r.code == 0, r
    lines = _rows(r.stdout)
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"], r
    assert any(line.split()[:2] == [org, "acme-ep"] for line in lines), r
    assert any(line.split()[:2] == ["admin", unique_name] for line in lines), r
    assert all(len(line) <= 120 for line in lines), r
    # A user sees the namespaces of its token only.
    token = cli("token", "create", "--for", f"{unique_name[:20]}-u").stdout.strip()
    mine = cli("list", "-A", env={"ENDPOINTCTL_TOKEN": token})
    assert mine.code == 0 and org not in mine.stdout and "no endpoints" in mine.stderr, mine


def test_events_and_tokens_fit_too(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    for args in (["events", unique_name], ["token", "list"], ["hardware"], ["describe", unique_name]):
        r = cli(*args, env={"COLUMNS": "80"})
        assert r.code == 0, r
        if args[0] != "describe":  # describe's key/value block folds long values, as kubectl describe does
            assert all(len(line) <= 80 for line in _rows(r.stdout)), r
