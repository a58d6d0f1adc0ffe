"""The CLI against a real ``netsuke serve`` subprocess: agents, keys, --json, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import EXE, Server, start_server, stop_server


def _yaml(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("netsuke: error: ")
    return lines[0]


def test_apply_creates_then_updates_then_reports_unchanged(server: Server, tmp_path: Path) -> None:
    f = _yaml(tmp_path, "writer", "name: writer\ndescription: first\ncapabilities: [write]\n")
    first = server.run_process("agents", "apply", "-f", str(f))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "writer: created (version 1)"
    f.write_text("name: writer\ndescription: second\ncapabilities: [write]\n")
    assert (
        server.run("agents", "apply", "-f", str(f)).stdout.strip() == "writer: updated (version 2)"
    )
    again = server.run("agents", "apply", "-f", str(f), "--json")
    assert json.loads(again.stdout) == [{"name": "writer", "outcome": "unchanged", "version": 2}]


def test_apply_a_folder_with_progress(server: Server, tmp_path: Path) -> None:
    for i in range(3):
        _yaml(tmp_path, f"bulk{i}", f"name: bulk{i}\n")
    proc = server.run("agents", "apply", "-f", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = sorted(line for line in proc.stdout.splitlines() if line.strip())
    assert lines == [f"bulk{i}: created (version 1)" for i in range(3)]


def test_ls_and_show_in_table_yaml_and_json(server: Server, tmp_path: Path) -> None:
    server.run(
        "agents", "apply", "-f", str(_yaml(tmp_path, "shown", "name: shown\nmodel: offline\n"))
    )
    table = server.run("agents", "ls")
    assert table.returncode == 0 and "shown" in table.stdout
    listed = json.loads(server.run("agents", "ls", "--json").stdout)
    assert "shown" in [a["name"] for a in listed]
    shown = server.run("agents", "show", "shown")
    assert "name: shown" in shown.stdout and "# version 1" in shown.stdout
    as_json = json.loads(server.run("agents", "show", "shown", "--json").stdout)
    assert as_json["name"] == "shown" and as_json["version"] == 1


def test_versions_rollback_and_delete(server: Server, tmp_path: Path) -> None:
    f = _yaml(tmp_path, "rb", "name: rb\ndescription: one\n")
    server.run("agents", "apply", "-f", str(f))
    f.write_text("name: rb\ndescription: two\n")
    server.run("agents", "apply", "-f", str(f))
    versions = json.loads(server.run("agents", "versions", "rb", "--json").stdout)
    assert [v["description"] for v in versions] == ["one", "two"]
    rolled = server.run("agents", "rollback", "rb", "1")
    assert rolled.stdout.strip() == "rb: version 3 (content of version 1)"
    assert server.run("agents", "delete", "rb").returncode == 0
    missing = server.run("agents", "show", "rb")
    assert missing.returncode == 1 and "404" in _one_line_error(missing)


def test_a_bad_file_is_refused_locally_in_one_line(server: Server, tmp_path: Path) -> None:
    f = _yaml(tmp_path, "bad", "name: bad\nmodel: nonsense:x\n")
    proc = server.run("agents", "apply", "-f", str(f))
    assert proc.returncode == 2
    assert "model" in _one_line_error(proc)


def test_keys_create_gives_a_working_key_with_its_role(server: Server) -> None:
    created = server.run("keys", "create", "--name", "erin", "--role", "user", "--json")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["secret"]
    assert server.run("agents", "ls", key=secret).returncode == 0
    denied = server.run("keys", "create", "--name", "x", key=secret)
    assert denied.returncode == 1 and "403" in _one_line_error(denied)
    listed = server.run("keys", "ls", "--json")
    assert "erin" in [k["name"] for k in json.loads(listed.stdout)]
    assert secret not in listed.stdout


def test_no_key_bad_key_and_no_server_are_one_line_errors(server: Server, tmp_path: Path) -> None:
    proc = subprocess.run(
        [EXE, "agents", "ls", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin"},
    )
    assert proc.returncode == 2 and "no API key" in _one_line_error(proc)
    bad = server.run_process("agents", "ls", key="nsk_00000000_bad")
    assert bad.returncode == 1 and "401" in _one_line_error(bad)
    down = server.run("agents", "ls", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in _one_line_error(down)


def test_serve_prints_the_admin_key_only_on_first_start(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "demo.yaml").write_text("name: demo\n")
    first = start_server(tmp_path, "--agents-dir", str(agents))
    try:
        listed = json.loads(first.run("agents", "ls", "--json").stdout)
        assert [a["name"] for a in listed] == ["demo"]
    finally:
        stop_server(first)
    second = subprocess.Popen(
        [
            EXE,
            "serve",
            "--port",
            "0",
            "--database-url",
            f"sqlite:///{tmp_path / 'cli.db'}",
            "--run-for",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    out, _ = second.communicate(timeout=60)
    assert "running at http://127.0.0.1:" in out and "nsk_" not in out


def test_serve_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "netsuke.toml").write_text("port = -1\n")
    proc = subprocess.run(
        [EXE, "serve"], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert proc.returncode == 2 and "port" in _one_line_error(proc)
    assert sys.executable


def test_events_follows_the_stream(server: Server, tmp_path: Path) -> None:
    import os
    import time

    env = {**os.environ, "NETSUKE_URL": server.url, "NETSUKE_API_KEY": server.key}
    proc = subprocess.Popen(
        [EXE, "events", "--topics", "definition.*", "--count", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    f = tmp_path / "evt.yaml"
    deadline = time.monotonic() + 30
    i = 0
    while proc.poll() is None and time.monotonic() < deadline:  # change until it is seen
        i += 1
        f.write_text(f"name: evt\ndescription: change {i}\n")
        server.run("agents", "apply", "-f", str(f))
        time.sleep(0.3)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    frame = json.loads(out.strip().splitlines()[-1])
    assert frame["topic"] == "definition.changed" and frame["data"]["name"] == "evt"
    bad = server.run("events", "--count", "1", key="nsk_00000000_bad")
    assert bad.returncode == 1 and "closed" in _one_line_error(bad)
