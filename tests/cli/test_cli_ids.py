"""CLI ergonomics against a real ``netsuke serve``: ``--version``; ids by prefix; tables that
keep ids apart at 80 columns; ``sessions``, ``webhooks`` and ``audit``; an unreachable server
and a refused topic pattern each said in one line."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsuke import __version__
from netsuke.cli import app

from .conftest import EXE, Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSUKE_ALLOW_PRIVATE_WEBHOOKS", "true")
        running = start_server(tmp_path_factory.mktemp("ids"))
    try:
        yield running
    finally:
        stop_server(running)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("netsuke: error: ")
    return lines[0]


def _narrow(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"NETSUKE_URL": server.url, "NETSUKE_API_KEY": server.key, "COLUMNS": "80"}
    result = CliRunner().invoke(app, list(args), env=env)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def test_version_flag() -> None:
    for flag in ("--version", "-V"):
        proc = subprocess.run([EXE, flag], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0 and proc.stdout.strip() == f"netsuke {__version__}"


def test_task_ids_by_prefix_and_distinct_at_80_columns(server: Server) -> None:
    ids = []
    for i in range(4):  # submitted within milliseconds: their UUIDv7 ids share a long prefix
        out = server.run("tasks", "submit", "job", "--payload", json.dumps({"i": i}), "--json")
        ids.append(json.loads(out.stdout)["id"])
    table = _narrow(server, "tasks", "ls")
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    shown = [re.split(r"\s*│\s*", line.strip("│ "))[0] for line in table.stdout.splitlines()
             if "job" in line]  # fmt: skip
    assert len(shown) == 4 and len(set(shown)) == 4
    for short in shown:
        assert sum(full.startswith(short) for full in ids) == 1, (short, ids)
        got = server.run("tasks", "get", short)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["id"].startswith(short)
    common = ids[0][:8]
    ambiguous = server.run("tasks", "get", common)
    assert ambiguous.returncode == 2
    assert "ambiguous: 4 tasks start with it" in _one_line_error(ambiguous)
    missing = server.run("tasks", "get", "ffffffff")
    assert missing.returncode == 1 and "no task id starts with" in _one_line_error(missing)


def test_an_unreachable_server_says_how_to_start_one(server: Server) -> None:
    for args in (["agents", "ls"], ["tasks", "get", "x"], ["events", "--count", "1"]):
        down = server.run(*args, "--url", "http://127.0.0.1:9")
        assert down.returncode == 1, down.stderr
        line = _one_line_error(down)
        assert "cannot reach http://127.0.0.1:9 (connection refused)" in line
        assert "netsuke serve" in line


def test_a_refused_topic_pattern_says_why(server: Server) -> None:
    bad = server.run("events", "-t", "BAD PATTERN", "--count", "1")
    assert bad.returncode == 2
    line = _one_line_error(bad)
    assert "bad topic pattern 'BAD PATTERN'" in line and "cannot reach" not in line


def test_sessions_ls_show_history_and_end(server: Server, tmp_path: Path) -> None:
    (tmp_path / "talker.yaml").write_text("name: talker\n")
    server.run("agents", "apply", "-f", str(tmp_path / "talker.yaml"))
    chat = subprocess.run(
        [EXE, "chat", "talker", "--user", "ann", "--url", server.url, "--key", server.key],
        input="hello there\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    listed = server.run("sessions", "ls", "--json")
    assert "talker-ann" in [s["session_id"] for s in json.loads(listed.stdout)]
    assert "talker-ann" in _narrow(server, "sessions", "ls").stdout
    shown = server.run("sessions", "show", "talker-a")  # a prefix
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("talker-ann: ") and "1 turns" in shown.stdout
    history = server.run("sessions", "history", "talker-ann")
    lines = history.stdout.splitlines()
    assert lines[0] == "you: hello there" and lines[1].startswith("talker: ")
    ended = server.run("sessions", "end", "talker-ann")
    assert ended.stdout.strip() == "talker-ann: ended"
    gone = server.run("sessions", "show", "talker-ann")
    assert "stopped" in gone.stdout  # the conversation is kept


def test_webhooks_add_ls_show_deliveries_rm(server: Server) -> None:
    added = server.run(
        "webhooks", "add", "http://127.0.0.1:9/hook", "-t", "agent.*", "-t", "task.*",
        "--description", "test hook",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    first, secret = added.stdout.splitlines()
    hook_id = first.split()[1]
    assert secret.startswith("whsec_")
    listed = _narrow(server, "webhooks", "ls")
    assert hook_id[:8] in listed.stdout and "test hook" in listed.stdout
    shown = json.loads(server.run("webhooks", "show", hook_id[:8]).stdout)
    assert shown["id"] == hook_id and "secret" not in shown
    assert server.run("webhooks", "deliveries", hook_id[:8]).returncode == 0
    refused = server.run("webhooks", "add", "ftp://x", "-t", "a.*")
    assert refused.returncode == 1 and "url" in _one_line_error(refused)
    assert server.run("webhooks", "rm", hook_id[:8]).stdout.strip() == f"webhook {hook_id}: deleted"
    assert server.run("webhooks", "show", hook_id).returncode == 1


def test_audit_lists_who_did_what(server: Server, tmp_path: Path) -> None:
    (tmp_path / "audited.yaml").write_text("name: audited\n")
    server.run("agents", "apply", "-f", str(tmp_path / "audited.yaml"))
    rows = json.loads(server.run("audit", "--action", "agent.create", "--json").stdout)
    assert any(r["target"].endswith("audited") for r in rows)
    table = _narrow(server, "audit", "-n", "5")
    assert table.returncode == 0 and "bootstrap" in table.stdout
    bad = server.run("audit", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in _one_line_error(bad)


def test_help_shows_defaults_in_brackets_and_no_bool_metavars() -> None:
    env = {"COLUMNS": "100"}
    serve = CliRunner().invoke(app, ["serve", "--help"], env=env)
    assert "Node name [local]." in serve.stdout and "[8000]" in serve.stdout
    tasks = CliRunner().invoke(app, ["tasks", "ls", "--help"], env=env)
    json_line = next(line for line in tasks.stdout.splitlines() if "--json" in line)
    assert "<bool>" not in json_line
    add = CliRunner().invoke(app, ["functions", "add", "--help"], env=env)
    assert "[kept; first time: its docstring]" in add.stdout
