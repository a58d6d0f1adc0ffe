"""``netsuke chat`` and ``netsuke agents start|stop|restart|status|logs`` against a real
``netsuke serve`` subprocess running the demo agents of ``agents/*.yaml``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXE, Server, start_server, stop_server

DEMO = Path(__file__).resolve().parents[2] / "agents"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("chat"), "--agents-dir", str(DEMO))
    try:
        yield running
    finally:
        stop_server(running)


def chat(
    server: Server, *args: str, stdin: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NETSUKE_URL": server.url, "NETSUKE_API_KEY": key or server.key}
    return subprocess.run(
        [EXE, "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_chat_streams_replies_from_a_demo_agent(demo: Server) -> None:
    proc = chat(demo, "greeter", "--user", "ann", stdin="Hello there\n\nHow are you?\n")
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.strip().splitlines()
    assert len(replies) == 2 and all(r.startswith("[offline]") for r in replies)
    assert "session greeter-ann" in proc.stderr
    # the session remembers: the offline model counts the turns of the conversation
    again = chat(demo, "greeter", "--user", "ann", "--json", stdin="Once more\n")
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert events[-1]["event"] == "completed"
    assert [e["event"] for e in events[:-1]] == ["delta"] * (len(events) - 1)
    assert "".join(e["text"] for e in events[:-1]) == events[-1]["output"]
    history = demo.run("agents", "status", "greeter", "--json")
    assert json.loads(history.stdout)["sessions"] == 1


def test_chat_as_a_user_key_and_errors(demo: Server) -> None:
    created = demo.run("keys", "create", "--name", "zoe", "--role", "user", "--json")
    zoe = json.loads(created.stdout)["secret"]
    ok = chat(demo, "summarizer", stdin="Summarise: a b c\n/quit\nnot sent\n", key=zoe)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip().splitlines()) == 1 and "summarizer-zoe" in ok.stderr
    other = chat(demo, "summarizer", "--user", "ann", stdin="hi\n", key=zoe)
    assert other.returncode == 1 and "403" in other.stderr
    assert other.stderr.strip().splitlines()[-1].startswith("netsuke: error: ")
    missing = chat(demo, "nobody", stdin="hi\n")
    assert missing.returncode == 1 and "404" in missing.stderr
    ended = chat(demo, "greeter", "--user", "tmp", "--end", stdin="bye\n")
    assert ended.returncode == 0
    status = json.loads(demo.run("agents", "status", "greeter", "--json").stdout)
    assert status["sessions"] <= 1  # greeter-tmp is gone; greeter-ann may remain


def test_agents_start_stop_restart_logs(demo: Server) -> None:
    started = demo.run_process("agents", "start", "researcher")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "researcher: start ok, running"
    status = demo.run("agents", "status", "researcher")
    assert status.stdout.startswith("researcher: running (version 1")
    restarted = demo.run("agents", "restart", "researcher", "--json")
    assert json.loads(restarted.stdout)["stopped"] == 1
    stopped = demo.run("agents", "stop", "researcher")
    assert "stop ok, stopped, 1 process(es) stopped" in stopped.stdout
    logs = demo.run("agents", "logs", "researcher", "-n", "10")
    topics = [line.split()[1] for line in logs.stdout.strip().splitlines()]
    assert topics == ["agent.started", "agent.stopped", "agent.started", "agent.stopped"]
    as_json = demo.run("agents", "logs", "researcher", "--json", "-n", "1")
    assert json.loads(as_json.stdout)["topic"] == "agent.stopped"
    missing = demo.run("agents", "start", "ghost")
    assert missing.returncode == 1 and "404" in missing.stderr
