"""`describe` with recent events (and its `get`/`status` aliases), `logs --replica`, `chat -o json`, chat waking an
endpoint scaled to zero with feedback, `pause`/`scale-to-zero --wait`, and `wait` ending at once on a stopped
endpoint (exit 3) unless `--wake` — against a real `endpointctl up` serving the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli, run_in_terminal
from tests.cli.test_stack import scli, stack  # noqa: F401  (fixtures: a real `endpointctl up` for this module)


def test_describe_logs_chat_and_stopped_states(scli: Cli, unique_name: str, tiny_model_dir: Path) -> None:  # noqa: F811
    r = scli("create", unique_name, "-r", str(tiny_model_dir), "--task", "text-generation", "--wait",
             "--timeout", "300", timeout=360)
    assert r.code == 0, r

    # describe ends with the recent events, newest first, as kubectl describe does; get and status are aliases.
    r = scli("describe", unique_name, env={"COLUMNS": "200"})
    assert r.code == 0, r
    after = r.stdout.split("Events (newest first):", 1)[1]
    assert "Created" in after and "Initializing" in after and after.index("Running") < after.index("Created"), r
    for alias in ("get", "status"):
        assert scli(alias, unique_name, env={"COLUMNS": "200"}).stdout == r.stdout, alias
    assert "Events" not in scli("describe", unique_name, "-o", "yaml").stdout

    # logs of one replica, unprefixed; a replica the endpoint does not have is one clear line.
    r = scli("logs", unique_name, "--replica", "r1-0", "--tail", "5")
    assert r.code == 0 and len(r.stdout.splitlines()) == 5 and "[r1-0]" not in r.stdout, r
    recent = scli("logs", unique_name, "--replica", "r1-0", "--since", "1h")
    assert recent.code == 0 and "health check passed" in recent.stdout, recent
    r = scli("logs", unique_name, "--replica", "r9")
    assert r.code == 1 and r.stderr.strip() == f"error: endpoint admin/{unique_name}: no replica 'r9' (replicas: r1-0)", r

    # chat -o json prints the chat completion object (a global -o json too).
    for args in (["chat", unique_name, "hi", "-o", "json"], ["-o", "json", "chat", unique_name, "hi"]):
        r = scli(*args, "--max-tokens", "4", timeout=120)
        assert r.code == 0, r
        answer = json.loads(r.stdout)
        assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant", r

    # scale-to-zero --wait returns once the replicas are gone; wait then ends at once with exit code 3.
    r = scli("scale-to-zero", unique_name, "--wait", "--timeout", "120", timeout=180)
    assert r.code == 0 and f"endpoint admin/{unique_name} scaled to zero (state: scaledToZero)" in r.stdout, r
    r = scli("wait", unique_name, "--timeout", "600", timeout=60)
    assert r.code == 3, r
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: endpoint {unique_name} is scaled to zero: the next request or `endpointctl resume {unique_name}` "
        "wakes it (or wait with --wake to resume it first)"), r
    r = scli("logs", unique_name)
    assert r.code == 0, r  # the stopped replica's file may remain; either lines or a line saying why there are none

    # chat wakes it, saying so (one line when stderr is not a terminal), then answers.
    r = scli("chat", unique_name, "wake up", "--max-tokens", "4", timeout=300)
    assert r.code == 0 and r.stdout.strip(), r
    assert r.stderr.strip() == f"waking admin/{unique_name} (scaled to zero); the answer follows once a replica is ready", r

    # pause --wait, then wait ends at once (exit 3) and wait --wake resumes it.
    r = scli("pause", unique_name, "--wait", "--timeout", "120", timeout=180)
    assert r.code == 0 and f"endpoint admin/{unique_name} paused (state: paused)" in r.stdout, r
    r = scli("wait", unique_name, "--timeout", "600", timeout=60)
    assert r.code == 3 and f"is paused: run `endpointctl resume {unique_name}`" in r.stderr, r
    r = scli("wait", unique_name, "--wake", "--timeout", "300", timeout=360)
    assert r.code == 0 and f"endpoint admin/{unique_name} is running" in r.stdout, r

    # On a terminal the wake-up shows a spinner with the endpoint's state instead of the line.
    assert scli("scale-to-zero", unique_name, "--wait", "--timeout", "120", timeout=180).code == 0
    r = run_in_terminal(scli, "chat", unique_name, "wake up", "--max-tokens", "4", timeout=300)
    assert r.code == 0, r
    assert f"{unique_name}: " in r.stdout and "waking admin/" not in r.stdout, r  # the spinner's state line

    assert scli("delete", unique_name, "--yes", "--wait", "--timeout", "120", timeout=180).code == 0
