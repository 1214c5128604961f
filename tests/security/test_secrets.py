"""Secrets never leave the write-only side: not in status, conditions, events or logs (the replica echoes them),
and not in the database file in plain text."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from common.config import Settings
from common.crypto import KEY_FILE, SecretsKeyError, keyring_for, rotate_all
from common.redaction import MASK, Redactor, redactor_for
from tests.controlplane.conftest import Api, payload
from tests.e2e.conftest import Api as StackApi
from tests.e2e.conftest import create_body

SECRET = "nan-SECRET-7f3a9c"


@pytest.mark.slow
def test_a_secret_that_breaks_start_up_never_reaches_status_or_events(make_stack, tiny_model_dir: Path) -> None:
    stack = make_stack()
    api = StackApi(stack.url)
    body = create_body("leaky", str(tiny_model_dir))
    del body["model"]["env"]["MAX_TOTAL_TOKENS"]
    body["model"]["secrets"] = {"MAX_TOTAL_TOKENS": SECRET}
    created = api.http.post("/v2/endpoint/admin", json=body)
    assert created.status_code == 201, created.text
    failed = api.wait_state("leaky", "failed", timeout=240)
    # The runtime's start-up error names the bad value, so the log tail in the message held it before.
    assert failed["status"]["message"] and MASK in failed["status"]["message"], failed["status"]
    everything = json.dumps([failed, api.events("leaky"), api.http.get("/v2/endpoint/admin").json()])
    assert SECRET not in everything
    logs = api.http.get("/v2/endpoint/admin/leaky/logs", params={"tail": 500})
    assert logs.status_code == 200 and SECRET not in logs.text and MASK in logs.text
    # And the replica's own log file is private to the stack's user.
    for log_file in (stack.data_dir / "local-replicas").rglob("*.log"):
        assert stat.S_IMODE(log_file.stat().st_mode) & 0o077 == 0, log_file


def test_redactor_masks_every_form_of_a_value() -> None:
    redact = redactor_for({"A": "s3cr3t\"x", "B": "ab"}, {"username": "u", "password": "pa55word"})
    assert redact('error: "s3cr3t\\"x" and s3cr3t"x and pa55word; ab stays') == \
        f'error: "{MASK}" and {MASK} and {MASK}; ab stays'
    assert redact.conditions([{"type": "Ready", "message": "got s3cr3t\"x"}])[0]["message"] == f"got {MASK}"
    assert not Redactor([]) and Redactor([])("text") == "text"


def _raw_endpoint_columns(settings: Settings) -> list[str]:
    from common.db import get_engine

    with get_engine(settings).connect() as conn:
        rows = conn.execute(text("SELECT CAST(secrets AS TEXT), CAST(image_credentials AS TEXT) FROM endpoints"))
        return [str(v) for row in rows for v in row]


def _custom_image_body(name: str) -> dict:
    body = payload(name)
    body["model"]["image"] = {"custom": {"url": "registry.example/img:1", "credentials": {
        "username": "robot", "password": "registry-pa55word"}}}
    body["model"]["secrets"] = {"HF_TOKEN": "hf_model-secret-value"}
    return body


def test_secrets_and_registry_passwords_are_encrypted_at_rest(api: Api) -> None:
    assert api.http.post("/v2/endpoint/admin", json=_custom_image_body("enc"), headers=api.admin).status_code == 201
    raw = " ".join(_raw_endpoint_columns(api.settings))
    assert "fernet:" in raw
    assert "hf_model-secret-value" not in raw and "registry-pa55word" not in raw
    if api.settings.effective_database_url.startswith("sqlite"):
        db_bytes = Path(api.settings.effective_database_url.removeprefix("sqlite:///")).read_bytes()
        assert b"hf_model-secret-value" not in db_bytes
    key_file = api.settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The worker's side reads them back as they were sent.
    from common.db import session_factory
    from common.models import Endpoint

    with session_factory(api.settings)() as session:
        row = session.query(Endpoint).filter_by(name="enc").one()
        assert row.secrets == {"HF_TOKEN": "hf_model-secret-value"}
        assert row.image_credentials == {"username": "robot", "password": "registry-pa55word"}


def test_key_rotation_re_encrypts_and_a_wrong_key_is_a_clear_error(api: Api) -> None:
    from common.db import make_engine

    assert api.http.post("/v2/endpoint/admin", json=_custom_image_body("rot"), headers=api.admin).status_code == 201
    old = (api.settings.data_dir / KEY_FILE).read_text().strip()
    new = Fernet.generate_key().decode()
    both = api.settings.model_copy(update={"secrets_key": f"{new},{old}"})
    engine = make_engine(both)
    try:
        assert rotate_all(engine, keyring_for(both)) == 1
    finally:
        engine.dispose()
    token = json.loads(_raw_endpoint_columns(api.settings)[0])
    assert keyring_for(api.settings.model_copy(update={"secrets_key": new})).decrypt(token) == \
        {"HF_TOKEN": "hf_model-secret-value"}
    with pytest.raises(SecretsKeyError):
        keyring_for(api.settings).decrypt(token)  # the old key alone no longer opens it
    with pytest.raises(SecretsKeyError, match="Fernet keys"):
        keyring_for(api.settings.model_copy(update={"secrets_key": "not-a-key"}))


def test_migration_encrypts_rows_written_in_plain_text(tmp_path: Path) -> None:
    from controlplane import migrate

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(settings, revision="0002")
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("INSERT INTO endpoints (namespace, name, type, spec, secrets, image_credentials, desired_state, "
               "generation, spec_revision, observed_generation, state, ready_replicas, target_replicas, conditions, "
               "observed, created_at, updated_at) VALUES ('admin', 'old', 'public', '{}', ?, ?, 'running', 1, 1, 0, "
               "'pending', 0, 0, '[]', '{}', '2026-01-01', '2026-01-01')",
               (json.dumps({"K": "plain-old-secret"}), json.dumps({"username": "u", "password": "plain-old-pw"})))
    db.commit()
    migrate.upgrade(settings)
    raw = " ".join(str(v) for v in db.execute("SELECT secrets, image_credentials FROM endpoints").fetchone())
    assert "plain-old-secret" not in raw and "plain-old-pw" not in raw and raw.count("fernet:") == 2
    migrate.downgrade(settings, revision="0002")
    assert json.loads(db.execute("SELECT secrets FROM endpoints").fetchone()[0]) == {"K": "plain-old-secret"}
    db.close()
    assert stat.S_IMODE(os.stat(settings.data_dir / KEY_FILE).st_mode) == 0o600


def test_the_gateway_never_reads_the_secret_columns(api: Api) -> None:
    """Routing needs no secret: a process whose key cannot open them (here: another key) still routes the endpoint,
    and no request through the gateway pays a decryption."""
    from common.db import make_engine
    from controlplane.gateway.routing import _load
    from sqlalchemy.orm import sessionmaker

    assert api.http.post("/v2/endpoint/admin", json=_custom_image_body("gw"), headers=api.admin).status_code == 201
    other = api.settings.model_copy(update={"secrets_key": Fernet.generate_key().decode()})
    engine = make_engine(other)
    try:
        view = _load(sessionmaker(engine), "admin", "gw")
    finally:
        engine.dispose()
    assert view is not None and view.name == "gw"
