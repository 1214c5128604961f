"""Consistent flags and messages against a live control plane (no worker): token revoke by the prefix `token list`
shows, a missing token pointing at where the CLI takes one, "did you mean" for a mistyped endpoint, namespaces
created explicitly, a global `-o` honoured by chat, and `logs` saying why there is nothing."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli


def _one_line_error(r, code: int = 1) -> str:  # noqa: ANN001 - a conftest.Result
    assert r.code == code and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r
    return r.stderr.strip().removeprefix("error: ")


def _create(cli: Cli, name: str, *extra: str) -> None:
    r = cli("create", name, "--repository", "/models/tiny", "--task", "text-generation", *extra)
    assert r.code == 0, r


def test_token_revoke_accepts_the_listed_prefix(cli: Cli, unique_name: str) -> None:
    user = f"{unique_name[:20]}-u"
    created = json.loads(cli("token", "create", "--for", user, "--name", "laptop", "-o", "json").stdout)
    listed = cli("token", "list", env={"COLUMNS": "200"})
    (row,) = [line for line in listed.stdout.splitlines() if f" {user} " in line]
    shown_prefix = next(cell for cell in row.split() if cell.endswith("…"))
    assert created["token"].startswith(shown_prefix.rstrip("…"))
    r = cli("token", "revoke", shown_prefix)
    assert r.code == 0 and f"token {created['id']} revoked" in r.stderr, r
    assert _one_line_error(cli("whoami", env={"ENDPOINTCTL_TOKEN": created["token"]}))
    msg = _one_line_error(cli("token", "revoke", "epc_doesnotexist"))
    assert msg == "no active token has the prefix 'epc_doesnotexist' (see `endpointctl token list`)"
    assert _one_line_error(cli("token", "revoke", "…"), code=2)


def test_an_ambiguous_prefix_is_refused(cli: Cli, unique_name: str) -> None:
    for i in range(2):
        assert cli("token", "create", "--for", f"{unique_name[:20]}-{i}").code == 0
    msg = _one_line_error(cli("token", "revoke", "epc_"))
    assert msg.startswith("the prefix 'epc_' matches ") and "give the id instead" in msg, msg


def test_a_missing_or_bad_token_says_where_the_cli_takes_one(cli: Cli) -> None:
    for token in ("", "epc_not-a-real-token"):
        msg = _one_line_error(cli("list", env={"ENDPOINTCTL_TOKEN": token}))
        assert msg.endswith("; pass --token, set ENDPOINTCTL_TOKEN or run `endpointctl login`"), msg
        assert "Authorization: Bearer" not in msg


def test_a_mistyped_endpoint_name_gets_did_you_mean(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    typo = unique_name[:-1] + ("x" if unique_name[-1] != "x" else "y")
    for verb in (["describe", typo], ["get", typo], ["events", typo], ["logs", typo], ["pause", typo],
                 ["update", typo, "--tag", "a"], ["delete", typo, "--yes"], ["chat", typo, "hi"]):
        msg = _one_line_error(cli(*verb))
        assert msg == f"endpoint admin/{typo} not found; did you mean '{unique_name}'?", (verb, msg)
    assert _one_line_error(cli("describe", "zzzzzzzz-nothing-like-it")) == "endpoint admin/zzzzzzzz-nothing-like-it not found"


def test_create_in_an_unknown_namespace_is_refused_until_an_admin_creates_it(cli: Cli, unique_name: str) -> None:
    ns = f"{unique_name[:20]}-nobody"
    msg = _one_line_error(cli("-n", ns, "create", "e1", "--repository", "/models/tiny"))
    assert msg.startswith(f"namespace '{ns}' does not exist") and f"endpointctl namespace create {ns}" in msg, msg
    assert ns not in cli("namespace", "list").stdout
    r = cli("namespace", "create", ns, "--kind", "org")
    assert r.code == 0, r
    assert _one_line_error(cli("namespace", "create", ns)) == f"namespace '{ns}' already exists"
    assert ns in cli("namespace", "list").stdout
    _create(cli, "e1", "-n", ns)
    token = cli("token", "create", "--for", f"{unique_name[:20]}-plain").stdout.strip()
    assert "only the admin" in _one_line_error(cli("namespace", "create", "other", env={"ENDPOINTCTL_TOKEN": token}))


def test_chat_honours_output_and_says_why_it_cannot_answer(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    for args in (["chat", unique_name, "hi", "-o", "json"], ["-o", "json", "chat", unique_name, "hi"]):
        msg = _one_line_error(cli(*args))  # parsed (no "No such option"), then refused: nothing runs yet
        assert msg.startswith(f"endpoint {unique_name} is not running (state: pending)"), msg


def test_logs_of_a_never_started_endpoint_say_why_they_are_empty(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    r = cli("logs", unique_name)
    assert r.code == 0 and r.stdout == "", r
    assert r.stderr.strip() == f"no logs: {unique_name} has not started a replica yet (state: pending)", r


def test_pause_and_scale_to_zero_take_wait_and_timeout(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    # No worker here: nothing ever stops, so the wait runs out its timeout (exit 124) — the flags exist and work.
    r = cli("scale-to-zero", unique_name, "--wait", "--timeout", "1", "--interval", "0.2")
    assert r.code == 124 and f"waiting for endpoint {unique_name} to be scaledToZero" in r.stderr, r
    r = cli("pause", unique_name, "--wait", "--timeout", "1", "--interval", "0.2")
    assert r.code == 124 and f"waiting for endpoint {unique_name} to be paused" in r.stderr, r


def test_logs_since_takes_kubectl_durations(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    for bad in ("5x", "0s", "-1m", "soon"):
        msg = _one_line_error(cli("logs", unique_name, "--since", bad), code=2)
        assert msg.startswith(f"--since '{bad}': give a duration such as 30s, 5m, 2h or 1d"), msg
    r = cli("logs", unique_name, "--since", "5m", "--tail", "10")
    assert r.code == 0 and "has not started a replica yet" in r.stderr, r


def test_a_global_output_format_is_honoured_by_delete_and_token_revoke(cli: Cli, unique_name: str) -> None:
    _create(cli, unique_name)
    r = cli("-o", "json", "delete", unique_name, "--yes")
    assert r.code == 0, r
    accepted = json.loads(r.stdout)
    assert accepted["name"] == unique_name and accepted["status"]["desiredState"] == "deleted", r
    created = json.loads(cli("token", "create", "--for", f"{unique_name[:20]}-j", "-o", "json").stdout)
    r = cli("-o", "yaml", "token", "revoke", str(created["id"]))
    assert r.code == 0 and f"id: {created['id']}" in r.stdout and "revoked: true" in r.stdout, r
    assert created["token"] not in r.stdout
