"""Every verb of the CLI, as a subprocess, against a live control plane (no worker: endpoints stay `pending`)."""

from __future__ import annotations

import json

import yaml

from tests.cli.conftest import Cli, ControlPlane


def create(cli: Cli, name: str, *extra: str) -> dict:
    r = cli("create", name, "--repository", "/models/tiny", "--task", "text-generation", "-o", "json", *extra)
    assert r.code == 0, r
    return json.loads(r.stdout)


def one_line_error(r, code: int = 1) -> str:  # noqa: ANN001 - a conftest.Result
    assert r.code == code, r
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r
    assert r.stderr.startswith("error: "), r
    return r.stderr.strip().removeprefix("error: ")


# -- identity ------------------------------------------------------------------------------------------------


def test_whoami(cli: Cli, controlplane: ControlPlane) -> None:
    r = cli("whoami")
    assert r.code == 0 and r.stdout.startswith("admin (user)"), r
    me = json.loads(cli("whoami", "-o", "json").stdout)
    assert me["type"] == "user" and me["name"] == "admin"


def test_bad_token_gets_the_servers_message(cli: Cli) -> None:
    msg = one_line_error(cli("list", env={"ENDPOINTCTL_TOKEN": "not-a-token"}))
    assert "token" in msg.lower(), msg
    msg = one_line_error(cli("list", env={"ENDPOINTCTL_TOKEN": ""}))
    assert msg, msg


# -- hardware ------------------------------------------------------------------------------------------------


def test_hardware_table_filters_and_machine_formats(cli: Cli) -> None:
    r = cli("hardware")
    assert r.code == 0, r
    assert "VENDOR" in r.stdout and "nvidia-a100" in r.stdout and "local" in r.stdout, r
    r = cli("hardware", "--vendor", "aws", "--accelerator", "gpu")
    assert "intel-icl" not in r.stdout and "nvidia-a100" in r.stdout and " local " not in r.stdout, r
    data = json.loads(cli("hardware", "--vendor", "local", "-o", "json").stdout)
    assert [v["name"] for v in data["vendors"]] == ["local"]
    assert yaml.safe_load(cli("-o", "yaml", "hardware", "--region", "us-east-1").stdout)["vendors"][0]["regions"][0]["name"] == "us-east-1"
    r = cli("hardware", "--vendor", "nope")
    assert r.code == 0 and "no hardware matches" in r.stderr, r


# -- create / list / describe --------------------------------------------------------------------------------


def test_create_then_list_and_describe(cli: Cli, unique_name: str) -> None:
    ep = create(cli, unique_name, "--env", "A=1", "--secret", "HF_TOKEN=supersecret", "--tag", "demo",
                "--min-replica", "0", "--max-replica", "2", "--scale-to-zero-timeout", "15")
    assert ep["name"] == unique_name and ep["status"]["state"] == "pending"
    assert ep["provider"] == {"vendor": "local", "region": "local"}  # picked from the catalog: local CPU first
    assert ep["compute"]["accelerator"] == "cpu"
    assert ep["compute"]["scaling"]["minReplica"] == 0 and ep["compute"]["scaling"]["maxReplica"] == 2
    assert ep["compute"]["scaling"]["scaleToZeroTimeout"] == 15
    assert ep["model"]["env"] == {"A": "1"} and ep["tags"] == ["demo"]

    r = cli("list", "-o", "wide")
    assert r.code == 0, r
    header = r.stdout.splitlines()[0].split()
    assert header == ["NAME", "STATUS", "REPLICAS", "MODEL", "TASK", "FRAMEWORK", "INSTANCE", "VENDOR", "REGION", "URL"]
    row = next(line for line in r.stdout.splitlines() if line.startswith(unique_name + " "))
    assert row.split()[:7] == [unique_name, "pending", "0/0", "/models/tiny", "text-generation", "pytorch", "cpu-x1"], row
    items = json.loads(cli("list", "-o", "json").stdout)["items"]
    assert unique_name in [i["name"] for i in items]

    for args in (["describe", unique_name], ["describe", unique_name, "-o", "json"], ["-o", "yaml", "describe", unique_name]):
        r = cli(*args)
        assert r.code == 0, r
        assert "supersecret" not in r.stdout and "supersecret" not in r.stderr
    r = cli("describe", unique_name)
    assert "pending" in r.stdout and "/models/tiny" in r.stdout and "15 min" in r.stdout and "A=1" in r.stdout, r
    described = yaml.safe_load(cli("describe", unique_name, "-o", "yaml").stdout)
    assert described["name"] == unique_name and described["status"]["createdAt"].endswith("Z")


def test_create_the_seed_example_on_pinned_hardware(cli: Cli, unique_name: str) -> None:
    ep = create(cli, unique_name, "--framework", "pytorch", "--accelerator", "gpu", "--vendor", "aws",
                "--region", "us-east-1", "--instance-type", "nvidia-a100", "--instance-size", "x2", "--type", "protected")
    assert ep["compute"]["instanceType"] == "nvidia-a100" and ep["compute"]["instanceSize"] == "x2"
    assert ep["provider"] == {"vendor": "aws", "region": "us-east-1"}
    assert ep["type"] == "authenticated"  # protected is the older name


def test_create_errors_are_the_servers_message(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    assert "already exists" in one_line_error(cli("create", unique_name, "-r", "/models/tiny"))
    msg = one_line_error(cli("create", "Bad_Name", "-r", "/models/tiny"))
    assert "name" in msg.lower(), msg
    msg = one_line_error(cli("create", unique_name + "x", "-r", "m", "--vendor", "aws", "--region", "us-east-1",
                             "--accelerator", "gpu", "--instance-type", "nvidia-zz", "--instance-size", "x1"))
    assert "nvidia-zz" in msg or "instance" in msg.lower(), msg
    msg = one_line_error(cli("create", unique_name + "y", "-r", "m", "--vendor", "nope"))
    assert msg.startswith("no hardware in the catalog matches vendor=nope") and "aws" in msg, msg


def test_unknown_endpoint_is_a_clear_message_for_every_verb(cli: Cli) -> None:
    for args in (["describe", "nope"], ["update", "nope", "--max-replica", "2"], ["pause", "nope"], ["resume", "nope"],
                 ["scale-to-zero", "nope"], ["delete", "nope", "--yes"], ["delete", "nope"], ["events", "nope"],
                 ["logs", "nope"], ["chat", "nope", "hi"], ["wait", "nope", "--timeout", "1"]):
        msg = one_line_error(cli(*args))
        assert msg == "endpoint admin/nope not found", (args, msg)


# -- wait ----------------------------------------------------------------------------------------------------


def test_wait_times_out_on_a_pending_endpoint(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    r = cli("wait", unique_name, "--timeout", "1", "--interval", "0.2")
    assert r.code == 124, r
    assert f"{unique_name}: pending" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: timed out after 1s waiting for endpoint {unique_name} to be running (state: pending)"
    r = cli("create", unique_name + "-w", "-r", "/models/tiny", "--wait", "--timeout", "0.5")
    assert r.code == 124 and "timed out after 0.5s" in r.stderr, r


# -- update and actions --------------------------------------------------------------------------------------


def test_update_merges_only_the_given_fields(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name, "--min-replica", "1", "--env", "A=1")
    r = cli("update", unique_name, "--max-replica", "3", "--revision", "abc", "-o", "json")
    assert r.code == 0, r
    ep = json.loads(r.stdout)
    assert ep["compute"]["scaling"]["maxReplica"] == 3 and ep["compute"]["scaling"]["minReplica"] == 1
    assert ep["model"]["revision"] == "abc" and ep["model"]["env"] == {"A": "1"} and ep["model"]["repository"] == "/models/tiny"
    ep = json.loads(cli("update", unique_name, "--scaling-threshold", "2.5", "-o", "json").stdout)
    assert ep["compute"]["scaling"]["measure"] == {"pendingRequests": 2.5} and ep["compute"]["scaling"]["maxReplica"] == 3
    assert cli("update", unique_name, "--scaling-metric", "cpu").code == 2
    r = cli("update", unique_name, "--tag", "x", "--tag", "y")
    assert r.code == 0 and f"endpoint admin/{unique_name} updated" in r.stdout, r
    assert json.loads(cli("describe", unique_name, "-o", "json").stdout)["tags"] == ["x", "y"]
    msg = one_line_error(cli("update", unique_name, "--min-replica", "5"))
    assert "minReplica" in msg or "min" in msg.lower(), msg


def test_pause_resume_scale_to_zero(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    for verb, said in (("pause", "pause requested"), ("resume", "resume requested"), ("scale-to-zero", "scale to zero requested")):
        r = cli(verb, unique_name)
        assert r.code == 0, r
        assert r.stdout.startswith(f"endpoint admin/{unique_name} {said} (state: "), r
    ep = json.loads(cli("pause", unique_name, "-o", "json").stdout)
    assert ep["name"] == unique_name and ep["status"]["desiredState"] == "paused"
    r = cli("resume", unique_name, "--wait", "--timeout", "0.5")
    assert r.code == 124, r


# -- delete --------------------------------------------------------------------------------------------------


def test_delete_asks_for_confirmation(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    r = cli("delete", unique_name, input="n\n")
    assert r.code == 1 and "Delete endpoint admin/" in r.stderr and r.stderr.endswith("Not deleted.\n"), r
    assert "error" not in r.stderr, r
    assert cli("describe", unique_name).code == 0
    r = cli("delete", unique_name, input="")  # no answer (stdin closed) is no
    assert r.code == 1 and "Not deleted." in r.stderr and "error" not in r.stderr, r
    assert cli("describe", unique_name).code == 0
    r = cli("delete", unique_name, input="y\n")
    assert r.code == 0 and "deletion requested" in r.stderr, r
    r = cli("delete", unique_name, "--yes", "--wait", "--timeout", "30")
    # Already gone without a worker (or still being deleted): either way the message says what happened.
    assert r.code == 0 or "not found" in r.stderr, r
    assert one_line_error(cli("describe", unique_name)) == f"endpoint admin/{unique_name} not found"


def test_delete_yes_and_wait(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    r = cli("delete", unique_name, "-y", "--wait", "--timeout", "30")
    assert r.code == 0 and f"endpoint admin/{unique_name} deleted" in r.stderr, r


# -- events, logs, chat --------------------------------------------------------------------------------------


def test_events_newest_first(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    assert cli("pause", unique_name).code == 0
    r = cli("events", unique_name)
    assert r.code == 0, r
    assert r.stdout.splitlines()[0].split() == ["TIME", "TYPE", "REASON", "MESSAGE"]
    items = json.loads(cli("events", unique_name, "-o", "json").stdout)["items"]
    reasons = [e["reason"] for e in items]
    assert reasons[-1] == "Created" and len(reasons) >= 2, reasons
    assert len(json.loads(cli("events", unique_name, "--limit", "1", "-o", "json").stdout)["items"]) == 1
    assert cli("events", unique_name, "--limit", "0").code == 2


def test_logs_of_a_pending_endpoint(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    r = cli("logs", unique_name, "--tail", "10")
    # No replica has run: nothing to show, or the server says why logs are unavailable; never a traceback.
    assert r.code == 0 or r.stderr.startswith("error: logs are unavailable"), r
    assert "Traceback" not in r.stderr


def test_chat_needs_a_running_endpoint(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    expected = f"endpoint {unique_name} is not running (state: pending); `endpointctl wait {unique_name}` waits until it is"
    assert one_line_error(cli("chat", unique_name, "hello")) == expected
    assert one_line_error(cli("chat", unique_name, input="hello\n")) == expected


# -- tokens and namespaces -----------------------------------------------------------------------------------


def test_token_create_list_revoke_and_namespace_isolation(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    user = "u" + unique_name[1:7]
    r = cli("token", "create", "--name", "ci", "--for", user)
    assert r.code == 0, r
    token = r.stdout.strip()
    assert token and "\n" not in token and "not shown again" in r.stderr, r
    as_user = {"ENDPOINTCTL_TOKEN": token}

    me = json.loads(cli("whoami", "-o", "json", env=as_user).stdout)
    assert me["name"] == user
    r = cli("list", env=as_user)
    assert r.code == 0 and "no endpoints" in r.stderr, r  # namespace defaults to whoami's name
    msg = one_line_error(cli("describe", unique_name, "-n", "admin", env=as_user))
    assert "admin" in msg, msg  # forbidden or not found, in the server's words

    listed = json.loads(cli("token", "list", "-o", "json").stdout)["items"]
    mine = [t for t in listed if t["namespace"] == user]
    assert len(mine) == 1 and mine[0]["name"] == "ci" and not mine[0]["revoked"]
    r = cli("token", "list")
    assert r.code == 0 and "ID" in r.stdout.splitlines()[0] and user in r.stdout, r

    r = cli("token", "revoke", str(mine[0]["id"]))
    assert r.code == 0 and f"token {mine[0]['id']} revoked" in r.stderr, r
    one_line_error(cli("whoami", env=as_user))
    msg = one_line_error(cli("token", "revoke", "999999"))
    assert "999999" in msg or "not found" in msg, msg
    assert cli("token", "revoke", "abc").code == 1  # the server refuses a non-numeric id with its message


def test_login_stores_url_and_token(cli: Cli, controlplane: ControlPlane) -> None:
    without_env = {"ENDPOINTCTL_URL": None, "ENDPOINTCTL_TOKEN": None}
    msg = one_line_error(cli("login", "--token", "wrong", "--url", controlplane.url, env=without_env))
    assert "token" in msg.lower(), msg
    r = cli("login", "--token", controlplane.admin_token, "--url", controlplane.url, env=without_env)
    assert r.code == 0 and "logged in to" in r.stderr and "as admin" in r.stderr, r
    r = cli("whoami", env=without_env)
    assert r.code == 0 and r.stdout.startswith("admin (user)"), r
    shown = json.loads(cli("config", "show", "-o", "json", env=without_env).stdout)
    assert shown["settings"]["url"] == controlplane.url and shown["sources"]["token"].endswith("config.yaml")


def test_list_all_namespaces(cli: Cli, unique_name: str) -> None:
    create(cli, unique_name)
    items = json.loads(cli("list", "-A", "-o", "json").stdout)["items"]
    assert unique_name in [i["name"] for i in items]


# -- on a terminal -------------------------------------------------------------------------------------------


def test_on_a_terminal_wait_spins_and_delete_asks(cli: Cli, unique_name: str) -> None:
    from tests.cli.conftest import run_in_terminal

    create(cli, unique_name)
    r = run_in_terminal(cli, "wait", unique_name, "--timeout", "1.5", "--interval", "0.2")
    assert r.code == 124, r
    assert f"timed out after 1.5s waiting for endpoint {unique_name}" in r.stdout, r
    r = run_in_terminal(cli, "delete", unique_name, answers="n\r")
    assert r.code == 1 and f"Delete endpoint admin/{unique_name}?" in r.stdout and "Not deleted." in r.stdout, r
    r = run_in_terminal(cli, "delete", unique_name, answers="y\r")
    assert r.code == 0 and "deletion requested" in r.stdout, r
