"""Two ``netsuke serve --cluster`` nodes on one store: a session is owned by one node at a
time (its lease judged by the database clock), the other node's requests for it are forwarded
to the owner while it lives (``X-Netsuke-Node`` names it), refused with 503
``session-moved`` while the dead owner's lease runs, and once that lease has run out the
survivor takes the session over with its whole conversation (issue 17, fenced ownership wired
to the membership leases of issue 16)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from netsuke.manager.testing import NatsServer
from netsuke.store import upgrade

from . import serve_node as N
from .helpers import prefix

pytestmark = pytest.mark.timeout(240)

# the launcher lives in serve_node.py (shared with test_forwarding and test_cluster_page)
_env, _start, _stop = N.env, N.start, N.stop


@contextlib.asynccontextmanager
async def _alpha_and_beta(
    tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[tuple[subprocess.Popen[str], str, str, str]]:
    """Two nodes, alpha then beta, on one SQLite file with the offline agent ``helper``:
    alpha's process, both base URLs and the admin key alpha issued; both stopped after."""
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
        yield alpha, a_url, b_url, key
    finally:
        _stop(alpha)
        if beta is not None:
            _stop(beta)


async def test_a_session_moves_to_the_survivor_with_its_memory_only_after_the_owners_lease(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    async with _alpha_and_beta(tmp_path, nats_server) as (alpha, a_url, b_url, key):
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


async def test_a_pinned_session_taken_over_on_its_next_request_goes_to_a_node_with_its_labels(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A temporary session (failover does not restart it) whose agent requires ``gpu=a100``:
    its owner alpha dies; the next request reaches beta, which lacks the label, so beta does
    not take it over itself but forwards the request to gamma, the survivor carrying the label
    (failover's placement), which takes it over there with its conversation."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "pinned.yaml").write_text(
        "name: pinned\nmodel: offline\nconfig:\n  restart: temporary\n"
        "  node_labels:\n    gpu: a100\n"
    )
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": prefix(),
        "NETSUKE_AGENTS_DIR": str(agents),
    }
    procs = []
    try:
        alpha, a_url, key = await _start(
            "alpha",
            nats_server.url,
            _env(**common, NETSUKE_BOOTSTRAP_ADMIN="true"),
            tmp_path,
            labels=["gpu=a100"],
        )
        procs.append(alpha)
        assert key is not None
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            # the session starts on alpha, the only node so far
            r = await http.post(f"{a_url}/api/v1/sessions", json={"agent": "pinned", "user": "u"})
            assert r.status_code in (200, 201), r.text
            sid = r.json()["session_id"]
            r = await http.post(
                f"{a_url}/api/v1/sessions/{sid}/messages", json={"message": "remember nara"}
            )
            assert r.status_code == 200 and r.headers["X-Netsuke-Node"].startswith("alpha#")
            beta, b_url, _ = await _start(
                "beta", nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="false"), tmp_path
            )
            procs.append(beta)
            gamma, _, _ = await _start(
                "gamma",
                nats_server.url,
                _env(**common, NETSUKE_BOOTSTRAP_ADMIN="false"),
                tmp_path,
                labels=["gpu=a100"],
            )
            procs.append(gamma)

            os.kill(alpha.pid, signal.SIGKILL)
            alpha.wait(30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while True:
                r = await http.post(
                    f"{b_url}/api/v1/sessions/{sid}/messages", json={"message": "and now?"}
                )
                if r.status_code == 200:
                    break
                assert r.status_code in (503, 504), r.text
                assert loop.time() < deadline, "no survivor took the session over"
                await asyncio.sleep(0.5)
            assert r.headers["X-Netsuke-Node"].startswith("gamma#"), r.headers
            assert "turn 2" in r.json()["output"], r.text  # its memory came along
            view = (await http.get(f"{b_url}/api/v1/sessions/{sid}")).json()
            assert view["node"].startswith("gamma#"), view
    finally:
        for proc in procs:
            _stop(proc)


async def _frames_until_done(ws: Any) -> list[dict[str, Any]]:
    """The socket's frames up to a turn's end (``completed`` or ``error``)."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
        frames.append(frame)
        if frame["type"] in ("completed", "error"):
            return frames


async def test_a_chat_socket_follows_its_session_to_the_survivor_and_still_owns_it(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """The chat WebSocket held by beta owns a session on alpha; alpha is SIGKILLed: the next
    message finds the session where failover restarted it (beta, with its memory), a new
    ``session`` frame names that node, the turn answers, and the socket still owns the
    session there (closing it stops the session, ``owner_policy: stop``)."""
    async with _alpha_and_beta(tmp_path, nats_server) as (alpha, a_url, b_url, key):
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            r = await http.post(f"{a_url}/api/v1/sessions", json={"agent": "helper", "user": "u"})
            assert r.status_code == 201, r.text
            sid, alpha_id = r.json()["session_id"], r.headers["X-Netsuke-Node"]
            assert alpha_id.startswith("alpha#")
            ws_url = b_url.replace("http://", "ws://") + "/dashboard/chat/helper/ws?user=u"
            async with websockets.connect(
                ws_url, additional_headers={"Authorization": f"Bearer {key}"}
            ) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert hello["type"] == "session" and hello["node"] == alpha_id, hello
                await ws.send(json.dumps({"message": "remember kyoto"}))
                frames = await _frames_until_done(ws)
                assert frames[-1]["type"] == "completed", frames

                os.kill(alpha.pid, signal.SIGKILL)
                alpha.wait(30)
                # the first message after the crash may find no node yet (an error frame
                # after the socket's bounded wait): the chat goes on, the next one follows
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                moved: list[dict[str, Any]] = []
                while True:
                    await ws.send(json.dumps({"message": "and now?"}))
                    frames = await _frames_until_done(ws)
                    moved += [f for f in frames if f["type"] == "session"]
                    if frames[-1]["type"] == "completed":
                        break
                    assert frames[-1]["problem_type"].rsplit("/", 1)[1] in (
                        "session-moved",
                        "owner-lost",
                    ), frames
                    assert loop.time() < deadline, "the socket never found its session again"
                assert moved and moved[-1]["node"].startswith("beta#"), moved
                assert "turn 2" in frames[-1]["output"], frames[-1]  # the memory came along
                st = (await http.get(f"{b_url}/api/v1/sessions/{sid}")).json()
                assert st["node"].startswith("beta#") and st["state"] != "stopped", st
            # the socket still owned the session on beta: closing it stopped it there
            deadline = loop.time() + 60
            while (await http.get(f"{b_url}/api/v1/sessions/{sid}")).json()["state"] != ("stopped"):
                assert loop.time() < deadline, "the session did not stop with its socket"
                await asyncio.sleep(0.2)
