"""Typed settings: environment over netsuke.toml over defaults; bad values refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsuke.api import Settings, SettingsError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.host, s.port, s.node, s.allow_private_webhooks) == ("127.0.0.1", 8000, "local", False)
    assert s.url == "http://127.0.0.1:8000"


def test_environment_overrides_the_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netsuke.toml").write_text('port = 9001\nnode = "n1"\nrate_limit_per_minute = 5\n')
    monkeypatch.setenv("NETSUKE_PORT", "9002")
    monkeypatch.setenv("NETSUKE_API_KEY", "client-side, ignored by the server")
    s = load_settings()
    assert (s.port, s.node, s.rate_limit_per_minute) == (9002, "n1", 5)
    assert load_settings(port=7000).port == 7000


def test_bad_values_are_refused_naming_each_field_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netsuke.toml").write_text('port = 70000\nlog_level = "loud"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    fields = [f for f, _ in caught.value.problems]
    assert fields == ["port", "log_level"]
    assert "netsuke.toml" in str(caught.value)


def test_an_unknown_key_in_the_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netsuke.toml").write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings()


def test_a_bad_environment_value_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETSUKE_MAX_BODY_BYTES", "ten")
    with pytest.raises(SettingsError, match="max_body_bytes"):
        load_settings()


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "missing.toml")


def test_a_config_file_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(SettingsError):
        load_settings(bad)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1  # type: ignore[misc]
