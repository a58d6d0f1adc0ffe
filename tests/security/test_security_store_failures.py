"""Issue 14 item 8: a store that cannot take writes answers the truth.

* The domain row and its audit rows commit in one transaction or neither does: ``POST /tasks``
  under a database locked by another connection never commits the task and then fails; it
  answers 503 (problem+json, ``Retry-After``) with nothing stored, and a retry later stores it
  once, with its ownership record.
* A chat turn the store cannot commit answers 503 too, not a generic 502/500.
* ``/readyz`` reports not ready while the store cannot be written: locked, disk full, data
  directory read-only (a real tmpfs in a private mount namespace under a running ``netsuke
  serve``: filled, then made read-only by a read-only bind mount over it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from netsuke.api import Settings
from tests.api.conftest import serve

NETSUKE = str(Path(sys.executable).parent / "netsuke")


@contextmanager
def locked(db: Path) -> Iterator[threading.Event]:
    """Another connection holds the database's write lock until the block exits."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        taken.set()
        release.wait(120)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        thread.join(10)


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        value: int = conn.execute(sql).fetchone()[0]
    return value


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["type"].endswith("/store-unavailable")
    assert body["reason"] in ("locked", "full", "read-only", "io")


@pytest.mark.timeout(120)
async def test_a_locked_store_answers_503_and_stores_nothing_half(tmp_path: Path) -> None:
    db = tmp_path / "api.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{db}", port=0, rate_limit_per_minute=0)
    async with serve(settings) as live:
        admin = live.admin
        made = await admin.post("/api/v1/agents", json={"name": "helper", "model": "offline"})
        assert made.status_code == 201, made.text
        started = await admin.post("/api/v1/sessions", json={"agent": "helper", "user": "ann"})
        assert started.status_code == 201, started.text
        chat = f"/api/v1/sessions/{started.json()['session_id']}/messages"
        assert (await admin.get("/readyz")).status_code == 200
        messages = _count(db, "SELECT count(*) FROM messages")

        with locked(db):
            ready = await admin.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["store_write"] == "locked"
            plain, keyed, turn = await asyncio.gather(
                admin.post("/api/v1/tasks", json={"kind": "k"}, timeout=60),
                admin.post(
                    "/api/v1/tasks", json={"kind": "k", "idempotency_key": "once"}, timeout=60
                ),
                admin.post(chat, json={"message": "hello"}, timeout=60),
            )
        for response in (plain, keyed, turn):
            _unavailable(response)
        # nothing of those requests was committed: no task, no owner record, no turn
        assert _count(db, "SELECT count(*) FROM tasks") == 0
        assert _count(db, "SELECT count(*) FROM audit_log WHERE action = 'task.submit'") == 0
        assert _count(db, "SELECT count(*) FROM messages") == messages

        # the store is free again: ready, and the retry stores the task once, with its owner
        assert (await admin.get("/readyz")).status_code == 200
        again = await admin.post("/api/v1/tasks", json={"kind": "k", "idempotency_key": "once"})
        assert again.status_code == 201, again.text
        task_id = again.json()["id"]
        assert _count(db, "SELECT count(*) FROM tasks") == 1
        owners = _count(
            db,
            f"SELECT count(*) FROM audit_log WHERE action = 'task.submit' "
            f"AND target = 'task:{task_id}'",
        )
        requests = _count(db, "SELECT count(*) FROM audit_log WHERE action = 'POST /api/v1/tasks'")
        assert owners == 1 and requests >= 1
        replied = await admin.post(chat, json={"message": "hello"})
        assert replied.status_code == 200, replied.text
        # the turn and its request's audit record: one row, committed with the turn
        turns = _count(
            db,
            "SELECT count(*) FROM audit_log WHERE action = "
            "'POST /api/v1/sessions/{session_id}/messages' AND outcome = 'ok'",
        )
        assert turns == 1


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.timeout(120)
@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare -m)")
async def test_readyz_is_not_ready_on_a_full_disk_or_a_read_only_data_dir(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    agents = tmp_path / "agents"
    agents.mkdir()
    # the node runs in a mount namespace of its own, its data dir a 32 MiB tmpfs
    script = (
        f"mount -t tmpfs -o size=32m tmpfs {data} && exec {NETSUKE} serve --port 0 "
        f"--json-logs --database-url sqlite:///{data}/n.db --agents-dir {agents}"
    )
    env = {**os.environ, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0"}
    proc = await asyncio.create_subprocess_exec(
        *["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    url = key = ""
    try:
        for _ in range(50):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if m := re.search(r"running at (http://\S+)", line):
                url = m.group(1)
            if m := re.search(r"(nsk_\S+)", line):
                key = m.group(1)
            if (url and key) or not line:
                break
        assert url and key, "netsuke serve did not start"

        def inside(*command: str) -> None:
            subprocess.run(["nsenter", "-t", str(proc.pid), "-m", *command], check=False)

        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),  # a connection per request
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post("/api/v1/tasks", json={"kind": "k"})).status_code == 201

            # disk full: not ready, and a write answers 503, not 500
            inside("sh", "-c", f"dd if=/dev/zero of={data}/fill bs=1M 2>/dev/null; true")
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["store_write"] == "full"
            big = {"kind": "k", "payload": {"x": "y" * 200_000}}
            _unavailable(await client.post("/api/v1/tasks", json=big))
            inside("rm", "-f", f"{data}/fill")
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post("/api/v1/tasks", json={"kind": "k"})).status_code == 201

            # the data dir becomes read-only under the running node (a read-only bind mount
            # over it: the node's open files stay where they were, the path is read-only)
            inside("sh", "-c", f"mount --bind {data} {data} && mount -o remount,bind,ro {data}")
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["store_write"] == "read-only"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
