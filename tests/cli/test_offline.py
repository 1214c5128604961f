"""The CLI as a subprocess without a usable control plane: usage errors, unreachable servers, the config verbs."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Cli
from tests.fixtures.processes import free_port


def test_help_lists_every_verb(bare_cli: Cli) -> None:
    r = bare_cli("--help")
    assert r.code == 0, r
    for verb in ("create", "list", "describe", "wait", "update", "pause", "resume", "scale-to-zero", "delete", "logs",
                 "events", "chat", "hardware", "token", "dev", "runtime", "up", "demo", "config", "login", "whoami"):
        assert f" {verb} " in r.stdout, verb


def test_version(bare_cli: Cli) -> None:
    from importlib.metadata import version

    r = bare_cli("--version")
    assert r.code == 0 and r.stdout == f"endpointctl {version('endpointctl')}\n", r


def test_unreachable_control_plane_is_one_line_exit_1(bare_cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["-n", "me", "describe", "x"], ["-n", "me", "create", "x", "-r", "m"], ["whoami"]):
        r = bare_cli("--url", url, *args)
        assert r.code == 1, r
        assert r.stderr.startswith(f"error: cannot reach the control plane at {url}: "), r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r


def test_default_url_comes_from_env_then_config(bare_cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert bare_cli("config", "set", "url", url).code == 0
    r = bare_cli("list")
    assert f"cannot reach the control plane at {url}" in r.stderr, r
    other = f"http://127.0.0.1:{free_port()}"
    r = bare_cli("list", env={"ENDPOINTCTL_URL": other})
    assert f"cannot reach the control plane at {other}" in r.stderr, r


@pytest.mark.parametrize(
    "args",
    [
        ["--output", "xml", "list"],
        ["list", "-o", "csv"],
        ["list", "--bogus"],
        ["create"],
        ["create", "x", "--min-replica", "two"],
        ["create", "x", "-r", "m", "--accelerator", "tpu"],
        ["create", "x", "-r", "m", "--type", "secret"],
        ["wait", "x", "--timeout", "-1"],
        ["describe"],
        ["no-such-verb"],
        ["token", "revoke"],
        ["token", "create", "--bogus"],
        ["config", "set", "colour", "red"],
        ["hardware", "--accelerator", "tpu"],
        ["logs", "x", "--tail", "-1"],
        ["chat"],
        ["chat", "x", "hi", "--max-tokens", "0"],
        ["events", "x", "--limit", "501"],
        ["pause"],
        ["resume"],
        ["scale-to-zero"],
        ["delete"],
        ["update", "x", "--type", "open"],
        ["up", "--port", "-1"],
        ["dev", "tiny-model"],
    ],
)
def test_bad_flags_are_usage_errors(bare_cli: Cli, args: list[str]) -> None:
    r = bare_cli(*args)
    assert r.code == 2, r
    assert "Usage:" in r.stderr and "Traceback" not in r.stderr, r


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x"], "--repository is required"),
        (["create", "x", "-r", "m", "--min-replica", "2", "--max-replica", "1"], "--min-replica (2) must not exceed --max-replica (1)"),
        (["create", "x", "-r", "m", "--env", "NOEQUALS"], "--env expects KEY=VALUE, got 'NOEQUALS'"),
        (["create", "x", "-r", "m", "--health-route", "/h"], "give --image-url too"),
        (["update", "x"], "nothing to update"),
    ],
)
def test_invalid_option_values_are_refused_before_any_request(bare_cli: Cli, args: list[str], message: str) -> None:
    # No server listens at the default URL's port in the tests' HOME: these must fail before connecting.
    r = bare_cli("--url", f"http://127.0.0.1:{free_port()}", "-n", "me", *args)
    assert r.code == 2, r
    assert r.stderr.strip() == f"error: {message}" or message in r.stderr, r
    assert "cannot reach" not in r.stderr


def test_config_set_show_unset(bare_cli: Cli) -> None:
    assert bare_cli("config", "set", "token", "tok-abcdefghijklmnop").code == 0
    assert bare_cli("config", "set", "namespace", "team").code == 0
    r = bare_cli("config", "show", "-o", "json")
    assert r.code == 0, r
    shown = json.loads(r.stdout)
    assert shown["settings"] == {"url": "http://127.0.0.1:8000", "token": "tok-…mnop", "namespace": "team"}
    assert shown["sources"]["url"] == "default" and shown["sources"]["token"].endswith("config.yaml")
    r = bare_cli("config", "show", "--reveal", "-o", "yaml")
    assert "token: tok-abcdefghijklmnop" in r.stdout, r
    r = bare_cli("--token", "flagtoken", "config", "show", "--reveal")
    assert "flagtoken" in r.stdout and "flag" in r.stdout, r
    assert bare_cli("config", "unset", "token").code == 0
    assert json.loads(bare_cli("config", "show", "-o", "json").stdout)["settings"]["token"] is None


def test_broken_config_file_is_one_line(bare_cli: Cli) -> None:
    path = bare_cli.home / ".config" / "endpointctl" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("url: [oops\n")
    r = bare_cli("list")
    assert r.code == 1, r
    assert r.stderr.startswith(f"error: config file {path} is not valid YAML"), r


def test_dev_tiny_model_refuses_a_file_path(bare_cli: Cli) -> None:
    target = bare_cli.home / "file"
    target.write_text("x")
    r = bare_cli("dev", "tiny-model", str(target))
    assert r.code == 1 and r.stderr.strip() == f"error: {target} exists and is not a directory", r


@pytest.mark.parametrize(
    ("url", "message"),
    [("localhost:8000", "invalid control-plane URL 'localhost:8000': it must start with http:// or https://"),
     ("http://[::1", "invalid control-plane URL 'http://[::1': ")],
)
def test_malformed_url(bare_cli: Cli, url: str, message: str) -> None:
    r = bare_cli("--url", url, "list")
    assert r.code == 1 and r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1, r


@pytest.mark.parametrize("name", ["a/b", "..", "."])
def test_names_that_would_address_another_route(bare_cli: Cli, name: str) -> None:
    r = bare_cli("--url", f"http://127.0.0.1:{free_port()}", "-n", "me", "describe", name)
    assert r.code == 2 and r.stderr.startswith(f"error: invalid name {name!r}"), r


@pytest.fixture
def not_a_control_plane(tmp_path):  # noqa: ANN001, ANN201 - a plain static file server on loopback
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pointing_at_another_kind_of_server(bare_cli: Cli, not_a_control_plane: str) -> None:
    r = bare_cli("--url", not_a_control_plane, "list")
    assert r.code == 1, r
    assert r.stderr.strip() == f"error: GET /api/whoami-v2: HTTP 404 File not found — is {not_a_control_plane} an endpointctl control plane?", r


def test_wait_rides_out_a_control_plane_restart(bare_cli: Cli, tmp_path) -> None:  # noqa: ANN001
    import subprocess

    from tests.cli.conftest import ENDPOINTCTL, start_controlplane, stop_process_group

    (tmp_path / "data").mkdir()
    proc, cp = start_controlplane(tmp_path / "data", token="t-restart")
    env = {**bare_cli.env, "ENDPOINTCTL_URL": cp.url, "ENDPOINTCTL_TOKEN": cp.admin_token}
    waiter = None
    try:
        assert bare_cli("create", "e1", "-r", "/models/tiny", env=env).code == 0
        waiter = subprocess.Popen([ENDPOINTCTL, "-n", "admin", "wait", "e1", "--timeout", "12", "--interval", "0.3"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stop_process_group(proc)  # the API goes away mid-wait...
        port = int(cp.url.rsplit(":", 1)[1])
        proc, cp = start_controlplane(tmp_path / "data", token="t-restart", port=port)  # ...and comes back
        _, stderr = waiter.communicate(timeout=60)
        # The wait survived the restart and ended on its own timeout, not on "cannot reach".
        assert waiter.returncode == 124, stderr
        assert stderr.strip().splitlines()[-1] == "error: timed out after 12s waiting for endpoint e1 to be running (state: pending)"
    finally:
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        stop_process_group(proc)
