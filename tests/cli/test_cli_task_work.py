"""Work runs where users expect it (issue 19): through a real ``netsuke serve`` subprocess,
agents take the tasks whose capabilities they offer, ``--worker module:name`` loads handlers
and workflows, ``netsuke worker`` consumes the same store from a process of its own, and a
task nobody can take says so (task detail, metric)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import EXE, Server, start_server, stop_server

HANDLERS = """
from netsuke.routing import Workflow

def double(task):
    return {"n": task.payload["n"] * 2}

double.kinds = ["double"]

def triple(task):
    return {"n": task.payload["n"] * 3}

triple.kinds = ["triple"]

report = Workflow("daily-report")

@report.step()
async def fetch(ctx):
    return 1
"""

SUMMARIZER = "name: summarizer\nmodel: offline\ncapabilities: [summarise]\n"
EXTRACTOR = """name: extractor
model: offline
capabilities: [extract]
input_schema:
  type: object
  properties: {query: {type: string}}
  required: [query]
"""

BROKEN = "name: broken\nmodel: openai-chat:gpt-4o-mini\ncapabilities: [fragile]\n"  # no key


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("work")
    (tmp / "handlers_19.py").write_text(HANDLERS)
    agents = tmp / "agents"
    agents.mkdir()
    (agents / "summarizer.yaml").write_text(SUMMARIZER)
    (agents / "extractor.yaml").write_text(EXTRACTOR)
    (agents / "broken.yaml").write_text(BROKEN)
    server = start_server(
        tmp,
        "--agents-dir", str(agents),
        "--worker", "handlers_19:double",
        "--worker", "handlers_19:report",
    )  # fmt: skip
    try:
        yield server, tmp
    finally:
        stop_server(server)


def _api(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.key}"}
    )


def _submit(server: Server, body: dict[str, Any]) -> str:
    with _api(server) as api:
        r = api.post("/tasks", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _until(server: Server, task_id: str, status: str, within: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within
    with _api(server) as api:
        while True:
            task: dict[str, Any] = api.get(f"/tasks/{task_id}").json()
            if task["status"] == status or time.monotonic() > deadline:
                assert task["status"] == status, task
                return task
            time.sleep(0.1)


@pytest.mark.timeout(90)
def test_an_agent_takes_a_task_offering_its_capabilities(work: tuple[Server, Path]) -> None:
    server, _ = work
    task_id = _submit(
        server, {"kind": "summarise", "capabilities": ["summarise"], "payload": {"message": "hi"}}
    )
    done = _until(server, task_id, "succeeded")
    assert done["result"].startswith("[offline] You said 'hi'")
    assert done["detail"] is None


@pytest.mark.timeout(90)
def test_input_schema_refusal_is_an_attempt_failure_then_dead_letter(
    work: tuple[Server, Path],
) -> None:
    server, _ = work
    ok = _submit(
        server, {"kind": "extract", "capabilities": ["extract"], "payload": {"query": "q1"}}
    )
    assert "q1" in _until(server, ok, "succeeded")["result"]
    bad = _submit(
        server,
        {
            "kind": "extract",
            "capabilities": ["extract"],
            "payload": {"nope": 1},
            "max_attempts": 2,
            "backoff_base": 0.05,
            "backoff_cap": 0.05,
        },
    )
    dead = _until(server, bad, "dead")
    assert dead["attempts"] == 2
    assert "InvalidInputError" in dead["last_error"] and "query" in dead["last_error"]


@pytest.mark.timeout(90)
@pytest.mark.skipif("OPENAI_API_KEY" in os.environ, reason="the turn must fail for want of a key")
def test_a_failed_turn_is_a_failed_attempt_retried_then_dead_lettered(
    work: tuple[Server, Path],
) -> None:
    server, _ = work
    body = {
        "kind": "f",
        "capabilities": ["fragile"],
        "payload": {"message": "hi"},
        "max_attempts": 2,
        "backoff_base": 0.05,
        "backoff_cap": 0.05,
    }
    dead = _until(server, _submit(server, body), "dead")
    assert dead["attempts"] == 2 and "OPENAI_API_KEY is not set" in dead["last_error"], dead


@pytest.mark.timeout(90)
def test_no_message_for_an_agent_without_schema_fails_the_attempt(
    work: tuple[Server, Path],
) -> None:
    server, _ = work
    bad = _submit(
        server,
        {"kind": "s", "capabilities": ["summarise"], "payload": {"x": 1}, "max_attempts": 1},
    )
    dead = _until(server, bad, "dead")
    assert "payload.message" in dead["last_error"]


@pytest.mark.timeout(90)
def test_a_loaded_handler_runs_tasks_and_agents_leave_plain_tasks_alone(
    work: tuple[Server, Path],
) -> None:
    server, _ = work
    task_id = _submit(server, {"kind": "double", "payload": {"n": 21}})
    assert _until(server, task_id, "succeeded")["result"] == {"n": 42}


@pytest.mark.timeout(90)
def test_a_task_nobody_takes_says_so(work: tuple[Server, Path]) -> None:
    server, _ = work
    task_id = _submit(server, {"kind": "translate", "capabilities": ["translate"]})
    with _api(server) as api:
        task = api.get(f"/tasks/{task_id}").json()
        assert task["status"] == "queued"
        assert "no agent or worker on this node takes it" in task["detail"]
        assert "translate" in task["detail"]
    shown = json.loads(server.run("tasks", "get", task_id).stdout)  # the CLI shows it too
    assert "no agent or worker on this node takes it" in shown["detail"]
    page = httpx.get(f"{server.url}/tasks", cookies={"netsuke_key": server.key}).text
    row = page.split(f'data-task="{task_id}"', 1)[1].split("</tr>", 1)[0]
    assert "nobody on this node takes it" in row  # the dashboard's hint
    with _api(server) as api:
        deadline = time.monotonic() + 30
        while True:  # the node's scan runs every 5 s
            metrics = httpx.get(f"{server.url}/metrics").text
            m = re.search(r"^netsuke_tasks_unroutable (\S+)$", metrics, re.M)
            if (m and float(m.group(1)) >= 1) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert m is not None and float(m.group(1)) >= 1, metrics[-2000:]


@pytest.mark.timeout(60)
def test_workflows_list_shows_loaded_workflows(work: tuple[Server, Path]) -> None:
    server, _ = work
    with _api(server) as api:
        listed = api.get("/workflows").json()
    names = [w["name"] for w in listed["items"]] if isinstance(listed, dict) else []
    assert "daily-report" in names, listed


@pytest.mark.timeout(90)
def test_netsuke_worker_runs_handlers_in_its_own_process(work: tuple[Server, Path]) -> None:
    server, tmp = work
    task_id = _submit(server, {"kind": "triple", "payload": {"n": 5}})
    with _api(server) as api:  # nothing in the server takes it
        assert "no agent or worker" in api.get(f"/tasks/{task_id}").json()["detail"]
    proc = subprocess.Popen(
        [EXE, "worker", "--worker", "handlers_19:triple",
         "--database-url", f"sqlite:///{tmp / 'cli.db'}"],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NETSUKE_LOG_LEVEL": "info"},
    )  # fmt: skip
    try:
        assert _until(server, task_id, "succeeded")["result"] == {"n": 15}
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "running handlers_19:triple" in out and "stopped" in out
    assert "serve.tuned" in out + err  # tuned as serve is: start-up's objects frozen


@pytest.mark.timeout(60)
def test_a_bad_worker_target_is_one_line(tmp_path: Path) -> None:
    for args in (
        ["worker", "--worker", "not a target"],
        ["worker", "--worker", "no_such_module_19:fn", "--database-url",
         f"sqlite:///{tmp_path / 'w.db'}"],
        ["serve", "--port", "0", "--worker", "no_such_module_19:fn",
         "--database-url", f"sqlite:///{tmp_path / 's.db'}"],
    ):  # fmt: skip
        r = subprocess.run(
            [EXE, *args], capture_output=True, text=True, timeout=50, cwd=tmp_path, check=False
        )
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("netsuke: error: worker "), r.stderr
        assert len([ln for ln in lines if "Traceback" in ln]) == 0


@pytest.fixture(scope="module")
def redis_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.routing.conftest import need_redis, start_redis, stop_redis

    need_redis()
    proc, url = start_redis(
        tmp_path_factory.mktemp("redisq"), "--appendonly", "yes", "--appendfsync", "always"
    )
    try:
        yield url
    finally:
        stop_redis(proc)


@pytest.mark.timeout(120)
def test_a_node_on_a_redis_queue_runs_agent_and_worker_tasks(
    tmp_path: Path, redis_queue: str
) -> None:
    (tmp_path / "handlers_19r.py").write_text(HANDLERS)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "summarizer.yaml").write_text(SUMMARIZER)
    os.environ["NETSUKE_QUEUE_URL"] = redis_queue
    try:
        server = start_server(tmp_path, "--agents-dir", str(agents))
    finally:
        del os.environ["NETSUKE_QUEUE_URL"]
    try:
        by_agent = _submit(
            server, {"kind": "s", "capabilities": ["summarise"], "payload": {"message": "yo"}}
        )
        assert _until(server, by_agent, "succeeded")["result"].startswith("[offline]")
        by_worker = _submit(server, {"kind": "triple", "payload": {"n": 2}})
        proc = subprocess.Popen(
            [EXE, "worker", "--worker", "handlers_19r:triple",
             "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NETSUKE_QUEUE_URL": redis_queue, "NETSUKE_LOG_LEVEL": "warning"},
        )  # fmt: skip
        try:
            assert _until(server, by_worker, "succeeded")["result"] == {"n": 6}
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def jetstream_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from netsuke.manager.testing import NatsServer
    from tests.routing.conftest import need_nats

    need_nats()
    server = NatsServer(workdir=tmp_path_factory.mktemp("jsq"), jetstream=True, monitor=True)
    url = server.start()
    try:
        yield f"{url}?monitor={server.monitor_url}"
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_a_node_on_a_jetstream_queue_runs_agent_and_worker_tasks(
    tmp_path: Path, jetstream_queue: str
) -> None:
    (tmp_path / "handlers_19j.py").write_text(HANDLERS)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "summarizer.yaml").write_text(SUMMARIZER)
    os.environ["NETSUKE_QUEUE_URL"] = jetstream_queue
    try:
        server = start_server(tmp_path, "--agents-dir", str(agents))
    finally:
        del os.environ["NETSUKE_QUEUE_URL"]
    try:
        by_agent = _submit(
            server, {"kind": "s", "capabilities": ["summarise"], "payload": {"message": "yo"}}
        )
        assert _until(server, by_agent, "succeeded")["result"].startswith("[offline]")
        by_worker = _submit(server, {"kind": "triple", "payload": {"n": 2}})
        proc = subprocess.Popen(
            [EXE, "worker", "--worker", "handlers_19j:triple",
             "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NETSUKE_QUEUE_URL": jetstream_queue,
                 "NETSUKE_LOG_LEVEL": "warning"},
        )  # fmt: skip
        try:
            assert _until(server, by_worker, "succeeded")["result"] == {"n": 6}
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        stop_server(server)


@pytest.mark.timeout(180)  # eight CLI start-ups, beside another xdist worker
def test_a_bad_or_unreachable_queue_url_is_one_line_at_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, code, words in (
        ("kafka://x", 2, "queue_url"),
        ("nats://127.0.0.1:4222?durability=maybe", 2, "queue_url"),
        (f"nats://127.0.0.1:{port}", 1, f"cannot reach NATS at nats://127.0.0.1:{port}"),
        (f"redis://127.0.0.1:{port}/0", 1, f"cannot reach Redis at redis://127.0.0.1:{port}"),
    ):
        for command in (
            ["serve", "--port", "0"],
            ["worker", "--worker", "handlers_x:fn"],
        ):
            r = subprocess.run(
                [EXE, *command, "--database-url", f"sqlite:///{tmp_path / 'q.db'}"],
                capture_output=True, text=True, timeout=50, cwd=tmp_path, check=False,
                env={**os.environ, "NETSUKE_QUEUE_URL": url},
            )  # fmt: skip
            lines = r.stderr.strip().splitlines()
            assert lines and lines[-1].startswith("netsuke: error: "), (url, command, r.stderr)
            assert words in lines[-1] and "Traceback" not in r.stderr, (url, r.stderr)
            assert r.returncode == (2 if command[0] == "serve" else code), r  # serve: 2
