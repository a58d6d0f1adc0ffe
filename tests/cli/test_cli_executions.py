"""``netsuke agents check``, apply-time model checks, failed turns that say why and
``netsuke executions ls|get`` against a real ``netsuke serve`` whose environment has no
``OPENAI_API_KEY`` (issue 15, items 4 and 5)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXE, Server, start_server, stop_server

REASON = "model openai-chat:gpt-4o: OPENAI_API_KEY is not set"


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("keyless")
    folder = tmp / "agents"
    folder.mkdir()
    # synced at start, as a definition written where the key was set
    (folder / "gpt.yaml").write_text("name: gpt\nmodel: openai-chat:gpt-4o\n")
    saved = os.environ.pop("OPENAI_API_KEY", None)
    try:
        running = start_server(tmp, "--agents-dir", str(folder))
    finally:
        if saved is not None:
            os.environ["OPENAI_API_KEY"] = saved
    try:
        yield running
    finally:
        stop_server(running)


def test_agents_check_reports_a_model_that_cannot_work(keyless: Server, tmp_path: Path) -> None:
    bad = keyless.run("agents", "check", "gpt")
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"gpt: model: {REASON}"
    as_json = json.loads(keyless.run("agents", "check", "gpt", "--json").stdout)
    assert as_json["ok"] is False and as_json["problems"][0]["reason"] == REASON
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\n")
    assert keyless.run("agents", "apply", "-f", str(plain)).returncode == 0
    ok = keyless.run("agents", "check", "plain")
    assert ok.returncode == 0 and ok.stdout.strip() == "plain: ok (version 1, model offline)"
    missing = keyless.run("agents", "check", "nobody")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_apply_refuses_a_model_that_cannot_work(keyless: Server, tmp_path: Path) -> None:
    f = tmp_path / "gpt2.yaml"
    f.write_text("name: gpt2\nmodel: openai-chat:gpt-4o\n")
    proc = keyless.run("agents", "apply", "-f", str(f))
    assert proc.returncode == 1
    assert "OPENAI_API_KEY is not set" in proc.stderr
    secret = tmp_path / "leak.yaml"
    secret.write_text("name: leak\nconfig:\n  api_key: sk-live-abcdefgh12345678\n")
    proc = keyless.run("agents", "apply", "-f", str(secret))
    assert proc.returncode != 0 and "config.api_key" in proc.stderr and "api_key_env" in proc.stderr
    assert "sk-live" not in proc.stderr
    assert keyless.run("agents", "show", "leak").returncode == 1


def test_a_failed_turn_says_why_and_executions_show_it(keyless: Server) -> None:
    env = {**os.environ, "NETSUKE_URL": keyless.url, "NETSUKE_API_KEY": keyless.key}
    proc = subprocess.run(
        [EXE, "chat", "gpt", "--user", "ann"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"netsuke: error: Model unavailable (502): {REASON}"), proc.stderr
    execution = last.rsplit("netsuke executions get ", 1)[1].rstrip(")")

    listed = keyless.run("executions", "ls", "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert [i["id"] for i in items] == [execution]
    assert items[0]["error"] == f"ModelConfigError: {REASON}"
    table = keyless.run("executions", "ls", "--agent", "gpt")
    assert table.returncode == 0 and "failed" in table.stdout
    one = json.loads(keyless.run("executions", "get", execution).stdout)
    assert one["status"] == "failed" and one["session_id"] == "gpt-ann"
    assert keyless.run("executions", "get", "nope").returncode == 1
    bad = keyless.run("executions", "ls", "--status", "exploded")
    assert bad.returncode == 1 and "422" in bad.stderr


def test_the_server_warns_at_start_about_a_model_that_cannot_work(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "gpt.yaml").write_text("name: gpt\nmodel: openai-chat:gpt-4o\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen(
        [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp_path / 'w.db'}",
         "--agents-dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "running at" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
    warning = [line for line in seen if "api.agent_model_unusable" in line]
    assert warning and "OPENAI_API_KEY is not set" in warning[0] and "agent=gpt" in warning[0]
