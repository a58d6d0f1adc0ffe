"""Three ``netsuke serve --cluster`` node processes on one store (one SQLite file, and
PostgreSQL): 100 concurrent get-or-starts spread over the nodes make exactly one session
(claimed once: epoch 1), every caller answered by its owner; every session operation works
from every node, forwarded to the owner over NATS (``X-Netsuke-Node`` names it): JSON turns
with their audit record and ``Idempotency-Key`` (a retry on another node gets the stored
reply), SSE, status, listings with each session's ``node``, cancel, the chat WebSocket, stop;
and an owner frozen mid-request gives the caller a typed 504, never a hang (issue 17)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets

from netsuke.manager.testing import NatsServer
from netsuke.store import upgrade

from . import serve_node as N
from .helpers import prefix

pytestmark = pytest.mark.timeout(420)

NODE = "X-Netsuke-Node"
_env, _stop = N.env, N.stop


async def _start(
    name: str, nats: str, env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[str], str, str | None]:
    """A node (gamma carries ``gpu=a100``) with a 3 s lease (``serve_node.start``)."""
    labels = ["gpu=a100"] if name == "gamma" else []
    return await N.start(name, nats, env, cwd, lease=3, labels=labels)


async def test_three_nodes_serve_one_session_from_every_node(
    tmp_path: Path, nats_server: NatsServer, migrated_url: str
) -> None:
    await upgrade(migrated_url)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "helper.yaml").write_text("name: helper\nmodel: offline\n")
    pinned = "model: offline\nconfig:\n  node_labels:\n"
    (agents / "pinned.yaml").write_text(f"name: pinned\n{pinned}    gpu: a100\n")
    (agents / "nowhere.yaml").write_text(f"name: nowhere\n{pinned}    zone: mars\n")
    (agents / "summer.yaml").write_text("name: summer\nmodel: offline\ncapabilities: [summarise]\n")
    common = {
        "NETSUKE_DATABASE_URL": migrated_url,
        "NETSUKE_CLUSTER_PREFIX": prefix(),
        "NETSUKE_AGENTS_DIR": str(agents),
    }
    procs: list[subprocess.Popen[str]] = []
    try:
        alpha, a_url, key = await _start(
            "alpha", nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="true"), tmp_path
        )
        procs.append(alpha)
        assert key is not None
        rest = await asyncio.gather(
            *(
                _start(
                    n, nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="false"), tmp_path
                )
                for n in ("beta", "gamma")
            )
        )
        procs += [p for p, _, _ in rest]
        urls = [a_url, *(u for _, u, _ in rest)]
        by_url = dict(zip(urls, ("alpha", "beta", "gamma"), strict=True))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=120) as http:
            # every node sees the three members before the race
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len((await http.get(f"{a_url}/api/v1/cluster/nodes")).json()["nodes"]) < 3:
                assert loop.time() < deadline
                await asyncio.sleep(0.2)

            # 100 concurrent get-or-starts, spread over the three nodes: one session
            body = {"agent": "helper", "user": "u"}
            answers = await asyncio.gather(
                *(http.post(f"{urls[i % 3]}/api/v1/sessions", json=body) for i in range(100))
            )
            assert all(r.status_code in (200, 201) for r in answers), [
                r.text for r in answers if r.status_code not in (200, 201)
            ]
            owner = answers[0].headers[NODE]
            assert {r.headers[NODE] for r in answers} == {owner}
            assert {r.json()["node"] for r in answers} == {owner}
            sid = answers[0].json()["session_id"]
            stored = (await http.get(f"{a_url}/api/v1/cluster/sessions")).json()["sessions"]
            assert [(s["session_id"], s["owner"], s["epoch"]) for s in stored] == [
                (sid, owner, 1)
            ]  # claimed once: no loser ever took it, even for a moment
            owner_url = next(u for u in urls if owner.startswith(by_url[u] + "#"))
            others = [u for u in urls if u != owner_url]

            # a JSON turn from a non-owner: answered by the owner, audited once, idempotent
            r = await http.post(
                f"{others[0]}/api/v1/sessions/{sid}/messages",
                json={"message": "remember kyoto"},
                headers={"Idempotency-Key": "k-1"},
            )
            assert r.status_code == 200 and r.headers[NODE] == owner, r.text
            retry = await http.post(
                f"{others[1]}/api/v1/sessions/{sid}/messages",
                json={"message": "remember kyoto"},
                headers={"Idempotency-Key": "k-1"},
            )
            assert retry.status_code == 200, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json() == r.json()
            reused = await http.post(
                f"{others[1]}/api/v1/sessions/{sid}/messages",
                json={"message": "something else"},
                headers={"Idempotency-Key": "k-1"},
            )
            assert reused.status_code == 422, reused.text
            assert "idempotency-key-reused" in reused.json()["type"]
            audit = (
                await http.get(
                    f"{a_url}/api/v1/audit",
                    params={"action": "POST /api/v1/sessions/{session_id}/messages"},
                )
            ).json()["items"]
            ok = [a for a in audit if a["outcome"] == "ok"]
            assert len(ok) == 2, audit  # the turn (with its commit) and the replay

            # SSE from a non-owner: the owner's events, then the committed turn
            async with http.stream(
                "POST",
                f"{others[1]}/api/v1/sessions/{sid}/messages?stream=true",
                json={"message": "and osaka"},
            ) as s:
                assert s.status_code == 200 and s.headers[NODE] == owner
                text = "".join([chunk async for chunk in s.aiter_text()])
            assert "event: delta" in text and "event: completed" in text, text

            # status, cancel, listing, history from every node
            for u in urls:
                st = await http.get(f"{u}/api/v1/sessions/{sid}")
                assert st.status_code == 200 and st.json()["node"] == owner, st.text
                assert st.json()["state"] in ("idle", "hibernated", "running")
                c = await http.post(f"{u}/api/v1/sessions/{sid}/cancel")
                assert c.status_code == 200 and c.json() == {"session_id": sid, "cancelled": False}
                listed = (await http.get(f"{u}/api/v1/sessions")).json()["items"]
                assert [(i["session_id"], i["node"]) for i in listed] == [(sid, owner)]
                h = (await http.get(f"{u}/api/v1/sessions/{sid}/messages")).json()["items"]
                assert len(h) == 4  # two turns (the retry replayed): request and response each

            # the chat WebSocket on a non-owner: the turn streams back from the owner
            ws_url = others[0].replace("http://", "ws://") + "/dashboard/chat/helper/ws?user=u"
            async with websockets.connect(
                ws_url, additional_headers={"Authorization": f"Bearer {key}"}
            ) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert hello["type"] == "session" and hello["node"] == owner, hello
                await ws.send(json.dumps({"message": "via websocket"}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    assert frame["type"] != "error", frame
                    if frame["type"] == "completed":
                        break
            # the socket owned the session (owner_policy stop): closing it stops it there
            deadline = loop.time() + 60
            while (await http.get(f"{others[1]}/api/v1/sessions/{sid}")).json()["state"] != (
                "stopped"
            ):
                assert loop.time() < deadline, "the session did not stop with its socket"
                await asyncio.sleep(0.2)

            # started again (its owner still owns it), stopped from a non-owner
            r = await http.post(f"{others[1]}/api/v1/sessions", json=body)
            assert r.status_code == 201 and r.headers[NODE] == owner, r.text
            d = await http.delete(f"{others[0]}/api/v1/sessions/{sid}")
            assert d.status_code == 204 and d.headers[NODE] == owner
            assert (await http.get(f"{owner_url}/api/v1/sessions/{sid}")).json()["state"] == (
                "stopped"
            )

            # pinned by label: started on gamma whichever node is asked; no such node: 503
            for u in urls:
                r = await http.post(f"{u}/api/v1/sessions", json={"agent": "pinned", "user": "p"})
                assert r.status_code in (200, 201), r.text
                assert r.headers[NODE].startswith("gamma#"), r.headers
            r = await http.post(f"{a_url}/api/v1/sessions", json={"agent": "nowhere", "user": "p"})
            assert r.status_code == 503, r.text
            assert r.json()["type"].endswith("/no-node-available")
            nodes = (await http.get(f"{a_url}/api/v1/cluster/nodes")).json()["nodes"]
            assert {n["name"]: n["labels"] for n in nodes}["gamma"] == {"gpu": "a100"}

            # every node takes tasks from the shared SQL queue
            ids = []
            for i in range(30):
                t = await http.post(
                    f"{urls[i % 3]}/api/v1/tasks",
                    json={
                        "kind": "summarise",
                        "capabilities": ["summarise"],
                        "payload": {"message": f"text {i}"},
                    },
                )
                assert t.status_code == 201, t.text
                ids.append(t.json()["id"])
            deadline = loop.time() + 120
            for tid in ids:
                while (await http.get(f"{a_url}/api/v1/tasks/{tid}")).json()["status"] != (
                    "succeeded"
                ):
                    assert loop.time() < deadline, "the queued tasks were not all taken"
                    await asyncio.sleep(0.2)
            took = {}
            for u in urls:
                m = (await http.get(f"{u}/metrics")).text
                line = next(
                    (
                        x
                        for x in m.splitlines()
                        if x.startswith('netsuke_tasks_total{event="succeeded"')
                    ),
                    "0 0",
                )
                took[by_url[u]] = float(line.split()[-1])
            assert sum(took.values()) == 30 and sum(1 for n in took.values() if n > 0) >= 2, took

            # an owner frozen mid-request: a typed error once it is judged down, never a hang
            r = await http.post(
                f"{others[0]}/api/v1/sessions", json={"agent": "helper", "user": "v"}
            )
            assert r.status_code == 201, r.text
            sid2, owner2 = r.json()["session_id"], r.headers[NODE]
            frozen = next(
                p for p, u in zip(procs, urls, strict=True) if owner2.startswith(by_url[u] + "#")
            )
            caller = next(u for u in urls if not owner2.startswith(by_url[u] + "#"))
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                r = await asyncio.wait_for(
                    http.post(f"{caller}/api/v1/sessions/{sid2}/messages", json={"message": "hi"}),
                    90,
                )
                assert r.status_code in (503, 504), r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"].rsplit("/", 1)[1] in (
                    "owner-lost",
                    "session-moved",
                    "forward-timeout",
                )
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
    finally:
        for p in procs:
            _stop(p)
