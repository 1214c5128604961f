"""Where the CLI's connection settings come from: flag > environment > config file > `up`'s record > default.

The config file (`~/.config/endpointctl/config.yaml`, or `$ENDPOINTCTL_CONFIG`) holds `url`, `token` and
`namespace`; `endpointctl config set|show|unset` and `endpointctl login` edit it. It is written with mode 0600
because it holds a bearer token.

`endpointctl up` records its stack in `local-stack.yaml` beside the config file through `record_local_stack`, so
that right after `up` every other verb talks to that stack without flags; it is a separate file so that `up` never
overwrites what the user configured, and it ranks below the config file. Several stacks may run at once (one per
data directory), so the file holds one record per data directory — URL, owner pid, start time and the path of the
admin-token file `up` keeps in its data directory (the token itself stays there, 0600) — and a stopping `up` removes
only its own. With no URL configured the CLI talks to the most recently started stack whose `up` is still alive; with
a URL configured it borrows the admin token of the recorded stack at that URL only, never sends it elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_ENV = "ENDPOINTCTL_CONFIG"
URL_ENV = "ENDPOINTCTL_URL"
TOKEN_ENV = "ENDPOINTCTL_TOKEN"
NAMESPACE_ENV = "ENDPOINTCTL_NAMESPACE"
KEYS = ("url", "token", "namespace")


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "endpointctl" / "config.yaml"


def local_stack_path() -> Path:
    return config_path().with_name("local-stack.yaml")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(KEYS)}")
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"config file {path}: {key} must be a string")
    return data


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Created 0600 from the start: the file holds a bearer token.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=True)
    os.replace(tmp, path)


def load_config() -> dict[str, Any]:
    return _read_yaml(config_path())


def set_config_value(key: str, value: str) -> Path:
    if key not in KEYS:
        raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(KEYS)}")
    data = load_config()
    data[key] = value
    path = config_path()
    _write_yaml(path, data)
    return path


def unset_config_value(key: str) -> Path:
    if key not in KEYS:
        raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(KEYS)}")
    data = load_config()
    data.pop(key, None)
    path = config_path()
    _write_yaml(path, data)
    return path


@contextmanager
def _local_stack_records() -> Iterator[dict[str, dict[str, Any]]]:
    """The records of `local-stack.yaml` for a read-modify-write under an exclusive lock, so that two `up`s starting
    or stopping at the same moment never lose each other's record."""
    import fcntl

    path = local_stack_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        records = _read_local_stacks(path)
        before = dict(records)
        yield records
        if records != before:
            if records:
                _write_yaml(path, {"stacks": records})
            else:
                path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _read_local_stacks(path: Path) -> dict[str, dict[str, Any]]:
    """Key -> record; a file an older `up` wrote (one top-level url/token) reads as one record keyed by its URL."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it and restart `endpointctl up`") from exc
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("url"), str):
        return {data["url"]: {k: data[k] for k in ("url", "token") if isinstance(data.get(k), str)}}
    stacks = data.get("stacks")
    if not isinstance(stacks, dict):
        return {}
    return {str(k): v for k, v in stacks.items() if isinstance(v, dict) and isinstance(v.get("url"), str)}


def record_local_stack(url: str, token: str | None = None, *, key: str | None = None, token_file: Path | None = None,
                       pid: int | None = None) -> Path:
    """Called by `endpointctl up` once its API listens, so other verbs find it without flags.

    `key` (the data directory) names the record, so that stacks on other data directories keep theirs; `up` passes
    the path of its token file rather than the token, which stays in the data directory."""
    import time

    record: dict[str, Any] = {"url": url.rstrip("/"), "started": time.time()}
    if token:
        record["token"] = token
    if token_file is not None:
        record["token_file"] = str(token_file)
    if pid is not None:
        record["pid"] = pid
    with _local_stack_records() as records:
        records[key or record["url"]] = record
    return local_stack_path()


def forget_local_stack(key: str) -> None:
    """Called by `endpointctl up` on shutdown: a stopped stack must not stay the default target, and only its own
    record goes (another stack's `up` may still be running)."""
    with _local_stack_records() as records:
        records.pop(key, None)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True  # a record without a pid (written by hand or by an older `up`) is believed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record_token(record: dict[str, Any]) -> str | None:
    if isinstance(record.get("token"), str):
        return record["token"]
    token_file = record.get("token_file")
    if not isinstance(token_file, str):
        return None
    try:
        return Path(token_file).read_text().strip() or None
    except OSError:
        return None


def local_stacks() -> list[dict[str, Any]]:
    """The recorded stacks whose `up` is alive, most recently started first (`key` added to each)."""
    live = [{**record, "key": key} for key, record in _read_local_stacks(local_stack_path()).items()
            if _pid_alive(record.get("pid"))]
    return sorted(live, key=lambda r: r.get("started") if isinstance(r.get("started"), (int, float)) else 0, reverse=True)


@dataclass(frozen=True)
class Settings:
    """The resolved connection settings and, for `config show`, where each came from."""

    url: str
    token: str | None
    namespace: str | None
    sources: dict[str, str]


def resolve(*, url: str | None = None, token: str | None = None, namespace: str | None = None) -> Settings:
    """Merge flags (arguments), the environment, the config file and `up`'s record, in that order of precedence."""
    flags = {"url": url, "token": token, "namespace": namespace}
    env = {"url": os.environ.get(URL_ENV), "token": os.environ.get(TOKEN_ENV), "namespace": os.environ.get(NAMESPACE_ENV)}
    stacks = local_stacks()
    newest = stacks[0] if stacks else {}
    layers = [
        ("flag", flags),
        ("env", env),
        (str(config_path()), load_config()),
        (str(local_stack_path()), {"url": newest.get("url")}),
    ]
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        values[key] = None
        sources[key] = "unset"
        for source, layer in layers:
            value = layer.get(key)
            if value:
                values[key] = value
                sources[key] = source
                break
    if not values["url"]:
        values["url"] = DEFAULT_URL
        sources["url"] = "default"
    url = values["url"].rstrip("/")
    if not values["token"]:
        # `up`'s admin token belongs to `up`'s URL; never send it to another control plane.
        for record in stacks:
            if record["url"].rstrip("/") == url and (token := _record_token(record)):
                values["token"], sources["token"] = token, str(local_stack_path())
                break
    return Settings(url=url, token=values["token"], namespace=values["namespace"], sources=sources)
