"""Where the CLI's connection settings come from: flag > environment > config file > `up`'s record > default.

The config file (`~/.config/endpointctl/config.yaml`, or `$ENDPOINTCTL_CONFIG`) holds `url`, `token` and
`namespace`; `endpointctl config set|show|unset` and `endpointctl login` edit it. It is written with mode 0600
because it holds a bearer token.

`endpointctl up` records the URL (and the admin token it generated) in `local-stack.yaml` beside the config file
through `record_local_stack`, so that right after `up` every other verb talks to that stack without flags; it is a
separate file so that `up` never overwrites what the user configured, and it ranks below the config file.
"""

from __future__ import annotations

import os
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


def record_local_stack(url: str, token: str | None = None) -> Path:
    """Called by `endpointctl up` once its API listens, so other verbs find it without flags."""
    data: dict[str, Any] = {"url": url}
    if token:
        data["token"] = token
    path = local_stack_path()
    _write_yaml(path, data)
    return path


def forget_local_stack() -> None:
    """Called by `endpointctl up` on shutdown: a stopped stack must not stay the default target."""
    try:
        local_stack_path().unlink()
    except FileNotFoundError:
        pass


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
    layers = [
        ("flag", flags),
        ("env", env),
        (str(config_path()), load_config()),
        (str(local_stack_path()), _read_yaml(local_stack_path())),
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
    if sources["token"] == str(local_stack_path()) and layers[3][1].get("url", "").rstrip("/") != values["url"].rstrip("/"):
        # `up`'s admin token belongs to `up`'s URL; never send it to another control plane.
        values["token"], sources["token"] = None, "unset"
    return Settings(url=values["url"].rstrip("/"), token=values["token"], namespace=values["namespace"], sources=sources)
