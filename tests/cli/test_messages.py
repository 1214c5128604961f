"""A failed deploy says its cause in one line — from `create --wait`, in `describe`, in every event — and the
detail (the traceback) is in `logs`, against a real `endpointctl up` whose replicas really fail to load."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli
from tests.cli.test_stack import scli, stack  # noqa: F401  (fixtures: a real `endpointctl up` for this module)


def _broken_models(tmp_path: Path) -> dict[str, Path]:
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{ this is not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"bad-json": bad_json, "empty": empty}


def test_a_failed_deploy_says_its_cause_in_one_line(scli: Cli, unique_name: str, tmp_path: Path) -> None:  # noqa: F811
    models = _broken_models(tmp_path)
    empty_name = unique_name[:40] + "-e"
    assert scli("create", empty_name, "-r", str(models["empty"]), "--task", "text-generation").code == 0
    r = scli("create", unique_name, "-r", str(models["bad-json"]), "--task", "text-generation", "--wait",
             "--timeout", "240", timeout=300)
    assert r.code == 1, r
    assert "Traceback" not in r.stderr and 'File "' not in r.stderr, r
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: endpoint {unique_name} failed to deploy: replica ") and "model load failed: " in last, r

    ep = json.loads(scli("describe", unique_name, "-o", "json").stdout)
    message = ep["status"]["message"]
    assert "\n" not in message and "model load failed: " in message and "details in the replica logs" in message, message
    assert all("\n" not in (c.get("message") or "") for c in ep["status"]["conditions"]), ep
    events = json.loads(scli("events", unique_name, "-o", "json").stdout)["items"]
    assert all("\n" not in e["message"] for e in events), events
    assert any(e["reason"] == "ModelLoadFailed" and "model load failed: " in e["message"] for e in events), events
    r = scli("events", unique_name, env={"COLUMNS": "200"})
    assert r.code == 0 and "Traceback" not in r.stdout and "File \"" not in r.stdout, r
    # The detail is where `logs` shows it.
    logs = scli("logs", unique_name, "--tail", "200")
    assert logs.code == 0 and "Traceback (most recent call last)" in logs.stdout and "model load failed" in logs.stdout, logs

    # A directory without config.json: the runtime names what is missing instead of transformers' model_type riddle.
    r = scli("wait", empty_name, "--timeout", "240", timeout=300)
    assert r.code == 1, r
    assert r.stderr.strip().splitlines()[-1].endswith(f"model load failed: no config.json in {models['empty']}; "
                                                      "details in the replica logs"), r
    for name in (unique_name, empty_name):
        assert scli("delete", name, "--yes", "--wait", "--timeout", "60", timeout=120).code == 0
