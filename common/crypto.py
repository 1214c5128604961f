"""Model secrets and registry credentials at rest: encrypted columns, a key kept out of the database.

Why: the database (a SQLite file in the embedded default, a managed PostgreSQL in production) is copied into
backups, dumps and support bundles far more often than the key is. Values are encrypted with Fernet
(`cryptography`: AES-128-CBC with HMAC-SHA256, authenticated, versioned tokens) — no hand-rolled crypto.

Keys come from `ENDPOINTCTL_SECRETS_KEY` (Fernet keys separated by commas: the first encrypts, all decrypt), or,
when it is unset, from `<data dir>/secrets.key`, generated 0600 on first use — the embedded stack's processes
share the data directory and so the key. Several hosts (Helm) must be given the same `ENDPOINTCTL_SECRETS_KEY`.

Rotation: put a new key first (`ENDPOINTCTL_SECRETS_KEY=new,old`), restart, run
`python -m controlplane rotate-secrets` (re-encrypts every row with the new key), then drop the old key.

Each engine is bound to the keyring of the Settings it was made from (`bind_keyring`), since one process (a test
run, a CLI) may open several databases with different data directories. Rows written before encryption existed
hold plain JSON objects; they are read as such and encrypted by migration 0003.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
import sqlalchemy as sa
from sqlalchemy import JSON, TypeDecorator

PREFIX = "fernet:"
KEY_FILE = "secrets.key"


class SecretsKeyError(RuntimeError):
    """The key is missing, malformed, or does not decrypt what the database holds."""


class Keyring:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretsKeyError("no secrets key")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except ValueError as exc:
            raise SecretsKeyError("ENDPOINTCTL_SECRETS_KEY must hold Fernet keys (32 url-safe base64-encoded "
                                  "bytes), separated by commas") from exc

    def encrypt(self, value: Any) -> str:
        return PREFIX + self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def decrypt(self, token: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token[len(PREFIX):].encode()))
        except InvalidToken as exc:
            raise SecretsKeyError("stored secrets cannot be decrypted with ENDPOINTCTL_SECRETS_KEY / secrets.key: "
                                  "was the key changed without keeping the old one?") from exc

    def rotate(self, token: str) -> str:
        return PREFIX + self._fernet.rotate(token[len(PREFIX):].encode()).decode()


_file_lock = threading.Lock()


def _key_from_file(data_dir: Path) -> bytes:
    path = Path(data_dir) / KEY_FILE
    with _file_lock:
        try:
            value = path.read_bytes().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of the stack won the race: use its key
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key


def keyring_for(settings: Any) -> Keyring:
    configured = getattr(settings, "secrets_key", None)
    if configured:
        return Keyring([k.strip().encode() for k in str(configured).split(",") if k.strip()])
    return Keyring([_key_from_file(settings.data_dir)])


_bound: weakref.WeakKeyDictionary[Any, Keyring] = weakref.WeakKeyDictionary()


def bind_keyring(dialect: Any, keyring: Keyring) -> None:
    """Make columns of `EncryptedJSON` on the engine owning `dialect` use `keyring`."""
    _bound[dialect] = keyring


def _keyring(dialect: Any) -> Keyring:
    keyring = _bound.get(dialect)
    if keyring is None:
        from common.config import get_settings

        keyring = _bound[dialect] = keyring_for(get_settings())
    return keyring


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored as one Fernet token string inside a JSON column (no schema change on either backend)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return _keyring(dialect).encrypt(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, str) and value.startswith(PREFIX):
            return _keyring(dialect).decrypt(value)
        return value  # written before encryption (migration 0003 encrypts it)


_ENCRYPTED_COLUMNS = sa.table("endpoints", sa.column("id", sa.Integer), sa.column("secrets", sa.JSON),
                              sa.column("image_credentials", sa.JSON))


def rotate_all(engine: sa.Engine, keyring: Keyring) -> int:
    """Re-encrypt every stored value with the keyring's first key (and encrypt any plain one); rows changed."""
    changed = 0
    with engine.begin() as conn:
        rows = conn.execute(sa.select(_ENCRYPTED_COLUMNS.c.id, _ENCRYPTED_COLUMNS.c.secrets,
                                      _ENCRYPTED_COLUMNS.c.image_credentials)).all()
        for row_id, *values in rows:
            new = [None if v is None else keyring.rotate(v) if isinstance(v, str) and v.startswith(PREFIX)
                   else keyring.encrypt(v) for v in values]
            if new != values:
                conn.execute(_ENCRYPTED_COLUMNS.update().where(_ENCRYPTED_COLUMNS.c.id == row_id)
                             .values(secrets=new[0], image_credentials=new[1]))
                changed += 1
    return changed
