"""Two ``netsuke serve --cluster`` nodes on one store: a session is owned by one node at a
time (its lease judged by the database clock), the other node's requests for it are forwarded
to the owner while it lives (``X-Netsuke-Node`` names it), refused with 503
``session-moved`` while the dead owner's lease runs, and once that lease has run out the
survivor takes the session over with its whole conversation (issue 17, fenced ownership wired
to the membership leases of issue 16)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from netsuke.manager.testing import NatsServer
from netsuke.store import upgrade

from .helpers import prefix

pytestmark = pytest.mark.timeout(240)

EXE = str(Path(sys.executable).parent / "netsuke")


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    return {**clean, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0", **extra}


def _spawn(name: str, nats: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "serve", "--cluster", nats, "--node", name, "--port", "0", "--cluster-lease", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )


async def _start(
    name: str, nats: str, env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[str], str, str | None]:
    """A node process, its base URL and the admin key it printed (if it issued one)."""
    proc = _spawn(name, nats, env, cwd)
    assert proc.stdout is not None
    first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
    assert f"node '{name}#" in first, first
    url = first.split(" running at ")[1].split()[0]
    key = None
    if env.get("NETSUKE_BOOTSTRAP_ADMIN") == "true":
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert "admin API key" in line, line
        key = line.rsplit(":", 1)[1].strip()
    return proc, url, key


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_a_session_moves_to_the_survivor_with_its_memory_only_after_the_owners_lease(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "helper.yaml").write_text("name: helper\nmodel: offline\n")
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": prefix(),
        "NETSUKE_AGENTS_DIR": str(agents),
    }
    alpha, a_url, key = await _start(
        "alpha", nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="true"), tmp_path
    )
    beta = None
    try:
        assert key is not None
        beta, b_url, _ = await _start(
            "beta", nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="false"), tmp_path
        )
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            r = await http.post(f"{a_url}/api/v1/sessions", json={"agent": "helper", "user": "u"})
            assert r.status_code in (200, 201), r.text
            sid = r.json()["session_id"]
            r = await http.post(
                f"{a_url}/api/v1/sessions/{sid}/messages", json={"message": "remember kyoto"}
            )
            assert r.status_code == 200, r.text

            alpha_id = r.headers["X-Netsuke-Node"]
            assert alpha_id.startswith("alpha#"), r.headers

            # beta's requests for it reach alpha, the owner: get-or-start, a turn, status
            r = await http.post(f"{b_url}/api/v1/sessions", json={"agent": "helper", "user": "u"})
            assert r.status_code == 200, r.text
            assert r.headers["X-Netsuke-Node"] == alpha_id
            assert r.json()["node"] == alpha_id
            r = await http.post(f"{b_url}/api/v1/sessions/{sid}/messages", json={"message": "x"})
            assert r.status_code == 200, r.text
            assert r.headers["X-Netsuke-Node"] == alpha_id
            assert "turn 2" in r.json()["output"], r.text
            r = await http.get(f"{b_url}/api/v1/sessions/{sid}")
            assert r.status_code == 200 and r.json()["node"] == alpha_id, r.text
            listed = (await http.get(f"{b_url}/api/v1/sessions")).json()["items"]
            assert [(i["session_id"], i["node"]) for i in listed] == [(sid, alpha_id)]

            os.kill(alpha.pid, signal.SIGKILL)
            alpha.wait(30)
            # beta sees alpha gone, revokes its lease and restarts the session (failover); at the
            # latest once alpha's lease has run out (2 s, database clock)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while True:
                r = await http.post(
                    f"{b_url}/api/v1/sessions/{sid}/messages", json={"message": "and now?"}
                )
                if r.status_code == 200:
                    assert r.headers["X-Netsuke-Node"].startswith("beta#"), r.headers
                    break
                assert r.status_code in (503, 504), r.text
                assert loop.time() < deadline, "beta never took the session over"
                await asyncio.sleep(0.5)
            history = (await http.get(f"{b_url}/api/v1/sessions/{sid}/messages")).json()
            prompts = [
                part["content"]
                for message in history["items"]
                for part in message["parts"]
                if part.get("part_kind") == "user-prompt"
            ]
            # the memory came along, the forwarded turn "x" included
            assert prompts == ["remember kyoto", "x", "and now?"], prompts
            assert r.headers["X-Netsuke-Node"].startswith("beta#")
    finally:
        _stop(alpha)
        if beta is not None:
            _stop(beta)
