"""Where settings come from: flag > environment > config file > `up`'s record > default."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cli import config
from cli.errors import ConfigError


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "config.yaml"
    monkeypatch.setenv("ENDPOINTCTL_CONFIG", str(path))
    for name in ("ENDPOINTCTL_URL", "ENDPOINTCTL_TOKEN", "ENDPOINTCTL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_default_when_nothing_is_set() -> None:
    s = config.resolve()
    assert (s.url, s.token, s.namespace) == ("http://127.0.0.1:8000", None, None)
    assert s.sources == {"url": "default", "token": "unset", "namespace": "unset"}


def test_precedence_flag_env_file_up(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.record_local_stack("http://up:1", "up-token")
    s = config.resolve()
    assert (s.url, s.token) == ("http://up:1", "up-token")

    config.set_config_value("url", "http://file:2/")
    config.set_config_value("namespace", "file-ns")
    s = config.resolve()
    # The file's URL wins over up's, and up's admin token is not sent to a different server.
    assert (s.url, s.token, s.namespace) == ("http://file:2", None, "file-ns")

    monkeypatch.setenv("ENDPOINTCTL_URL", "http://env:3")
    monkeypatch.setenv("ENDPOINTCTL_TOKEN", "env-token")
    s = config.resolve()
    assert (s.url, s.token, s.namespace) == ("http://env:3", "env-token", "file-ns")
    assert s.sources == {"url": "env", "token": "env", "namespace": str(isolated)}

    s = config.resolve(url="http://flag:4", token="flag-token", namespace="flag-ns")
    assert (s.url, s.token, s.namespace) == ("http://flag:4", "flag-token", "flag-ns")
    assert set(s.sources.values()) == {"flag"}

    config.forget_local_stack("http://up:1")
    config.forget_local_stack("http://up:1")  # idempotent: `up` may call it twice on shutdown
    assert not config.local_stack_path().exists()


def test_config_file_is_private_and_round_trips(isolated: Path) -> None:
    config.set_config_value("token", "secret")
    assert stat.S_IMODE(os.stat(isolated).st_mode) == 0o600
    assert config.load_config() == {"token": "secret"}
    config.unset_config_value("token")
    assert config.load_config() == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("url: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a mapping"), ("colour: red\n", "unknown key(s) colour"),
     ("url: 3\n", "url must be a string")],
)
def test_bad_config_file_is_a_clear_error(isolated: Path, text: str, fragment: str) -> None:
    isolated.parent.mkdir(parents=True)
    isolated.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        config.resolve()


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        config.set_config_value("colour", "red")
