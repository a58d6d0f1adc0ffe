"""``netsuke manager``: bad settings fail at start with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsuke.cli import app


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"NETSUKE_MANAGER_SERVICE__STOP_TIMEOUT": "-1"}, "service.stop_timeout"),
        ({"NETSUKE_MANAGER_NATS__TLS_VERIFY": "maybe"}, "nats.tls_verify"),
    ],
)
def test_bad_setting_exits_2_naming_the_field(env: dict[str, str], field: str) -> None:
    result = CliRunner().invoke(app, ["manager"], env=env)
    assert result.exit_code == 2
    assert f"netsuke: error: bad setting {field}:" in result.output


def test_bad_yaml_section_names_it(tmp_path: Path) -> None:
    cfg = tmp_path / "agent_manager.yaml"
    cfg.write_text("service:\n  discovery_interval: never\n")
    result = CliRunner().invoke(app, ["manager", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "service.discovery_interval" in result.output


def test_unreachable_nats_fails_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["manager", "--nats-url", "nats://127.0.0.1:1", "--packages", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "manager could not start" in result.output
