"""Seed 001's ``count``/``find``/``stop_matching`` over a cluster (issue 17, part 1), and the
task queue taken by every node (part 4), with ``netsuke serve --cluster`` node processes on
one store and a real nats-server.

Queries ask every live node; a live member that does not answer within the timeout (here a
member joined from the test process whose query handlers never answer: a node whose event loop
runs but whose query is stuck) is reported in ``unreachable`` with ``partial: true``, never
dropped silently; the CLI exits 3 then."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from netsuke.agents import (
    AgentBusyError,
    AgentConfig,
    AgentConfigError,
    Agents,
    SessionMovedError,
    TurnTimeoutError,
)
from netsuke.cluster import join_cluster
from netsuke.cluster._codec import decode, encode
from netsuke.cluster._delegates import _WireError, error_from_wire
from netsuke.cluster._forward import RemoteOpError, SessionService
from netsuke.kernel import Runtime
from netsuke.manager.testing import NatsServer
from netsuke.routing import ChainDepthError
from netsuke.store import Store, upgrade

from . import serve_node as N
from .helpers import prefix
from .test_forwarding import NODE, _env, _start, _stop

pytestmark = pytest.mark.timeout(420)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [N.EXE, "cluster", "agents", *args], capture_output=True, text=True, env=_env(), timeout=120
    )


async def test_count_find_and_stop_matching_span_three_nodes_and_report_a_silent_one(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "helper.yaml").write_text("name: helper\nmodel: offline\n")
    pfx = prefix()
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": pfx,
        "NETSUKE_AGENTS_DIR": str(tmp_path / "agents"),
    }
    procs: list[subprocess.Popen[str]] = []
    try:
        key, urls = await N.start_nodes(
            ("alpha", "beta", "gamma"), nats_server.url, common, tmp_path, procs, _start
        )
        a_url = urls[0]
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            await N.wait_members(http, a_url, 3)
            where = {}
            for i, url in enumerate(urls, 1):  # one session per node, placed where asked
                r = await http.post(
                    f"{url}/api/v1/sessions", json={"agent": "helper", "user": f"u{i}"}
                )
                assert r.status_code == 201, r.text
                where[f"helper-u{i}"] = r.headers[NODE]
            assert len(set(where.values())) == 3

            # from any node: every node's agents, each with its node
            for url in urls:
                found = (await http.get(f"{url}/api/v1/cluster/agents?match=helper-u")).json()
                assert found["total"] == 3 and not found["partial"], found
                assert {a["name"]: a["node"] for a in found["agents"]} == where
                assert found["unreachable"] == [] and len(found["nodes"]) == 3
            glob = (await http.get(f"{a_url}/api/v1/cluster/agents?match=helper-u[12]")).json()
            assert [a["name"] for a in glob["agents"]] == ["helper-u1", "helper-u2"]
            counted = await http.get(f"{a_url}/api/v1/cluster/agents?match=helper&count=true")
            assert counted.json()["total"] == 3 and "agents" not in counted.json()
            out = await asyncio.to_thread(_cli, "helper-u", "--count", "--url", a_url, "--key", key)
            assert (out.returncode, out.stdout.strip()) == (0, "3"), out.stderr

            # a live member whose query never answers: reported, not dropped
            async with (
                Store.open(db) as store,
                join_cluster(
                    nats_server.url, "stuck", store.database, transport_options={"prefix": pfx}
                ) as stuck,
            ):
                service = SessionService(stuck.transport, stuck.runtime.events)

                async def never(_: dict[str, Any]) -> Any:
                    await asyncio.Event().wait()

                for op in ("agents_find", "agents_count", "agents_stop"):
                    service.handle(op, never)
                await service.start()
                try:
                    await N.wait_members(http, a_url, 4)
                    part = await http.get(
                        f"{urls[1]}/api/v1/cluster/agents", params={"match": "helper", "timeout": 1}
                    )
                    body = part.json()
                    assert body["partial"] and body["unreachable"] == [stuck.node_id], body
                    assert body["total"] == 3  # what the answering nodes hold
                    out = await asyncio.to_thread(
                        _cli, "helper", "--timeout", "1", "--url", a_url, "--key", key
                    )
                    assert out.returncode == 3 and stuck.node_id in out.stderr, out
                    assert out.stdout.count("helper-u") == 3
                finally:
                    await service.close()

            # stop_matching from one node stops the matching agents of every node
            stopped = await http.post(
                f"{urls[2]}/api/v1/cluster/agents/stop", params={"match": "helper-u"}
            )
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["total"] == 3 and not stopped.json()["partial"]
            left = (await http.get(f"{a_url}/api/v1/cluster/agents?match=helper")).json()
            assert left["total"] == 0, left
            bad = await http.post(f"{a_url}/api/v1/cluster/agents/stop")
            assert bad.status_code == 422  # stop needs a pattern
    finally:
        for p in procs:
            _stop(p)


async def test_queued_tasks_are_taken_by_agents_on_both_nodes(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "summer.yaml").write_text(
        "name: summer\nmodel: offline\ncapabilities: [summarise]\n"
    )
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": prefix(),
        "NETSUKE_AGENTS_DIR": str(tmp_path / "agents"),
    }
    procs: list[subprocess.Popen[str]] = []
    try:
        key, (a_url, b_url) = await N.start_nodes(
            ("alpha", "beta"), nats_server.url, common, tmp_path, procs, _start
        )
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            await N.wait_members(http, a_url, 2)
            ids = []
            for i in range(40):  # submitted through both nodes, as a load balancer would
                r = await http.post(
                    f"{(a_url, b_url)[i % 2]}/api/v1/tasks",
                    json={
                        "kind": "sum",
                        "payload": {"message": f"text {i}"},
                        "capabilities": ["summarise"],
                    },
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 240
            for tid in ids:
                while True:
                    task = (await http.get(f"{a_url}/api/v1/tasks/{tid}")).json()
                    if task["status"] == "succeeded":
                        break
                    assert task["status"] in ("queued", "leased", "running"), task
                    assert loop.time() < deadline, task
                    await asyncio.sleep(0.2)
                assert f"text {ids.index(tid)}" in str(task["result"])
            # each task ran in a session of its own, claimed by the node that took it
            stored = (await http.get(f"{a_url}/api/v1/cluster/sessions?limit=200")).json()
            takers = {s["owner_node"] for s in stored["sessions"] if "-task-" in s["session_id"]}
            assert takers == {"alpha", "beta"}, stored
    finally:
        for p in procs:
            _stop(p)


@pytest.mark.timeout(60)
async def test_errors_come_back_as_their_own_classes_with_their_fields() -> None:
    """What a serving node raised is rebuilt on the caller as the same Netsuke class (from a
    fixed table, never an arbitrary class), with its message and fields."""
    cases: list[BaseException] = [
        ChainDepthError("a", "c", ("a", "b"), 2, 1),
        TurnTimeoutError("billing", 30.0, execution_id="e1"),
        SessionMovedError("billing", "billing@x", current_epoch=4, owner="beta"),
        AgentBusyError("billing@x", 9, 8),
    ]
    for exc in cases:
        wire = decode(encode(_WireError(exc).to_wire()))
        back = error_from_wire(RemoteOpError(type(exc).__name__, str(exc), wire))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert {k: v for k, v in vars(back).items() if not k.startswith("_")} == {
            k: v for k, v in vars(exc).items() if not k.startswith("_")
        }
    foreign = RemoteOpError("Oops", "x", {"error": {"type": "os.system", "message": "x"}})
    assert error_from_wire(foreign) is foreign


@pytest.mark.timeout(60)
async def test_queries_on_one_node_answer_complete_and_need_no_cluster(tmp_path: Path) -> None:
    async with Runtime() as rt, Store.open(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}") as store:
        agents = await Agents.start(rt, store)
        for user in ("ann", "bob"):
            await agents.start_session("helper", user, AgentConfig(name="helper"))
        found = await agents.find("helper-a")
        assert [i.name for i in found.agents] == ["helper-ann"] and found.total == 1
        assert found.nodes == (str(rt.node),) and not found.partial
        assert (await agents.count()).total == agents.count_agents() == 2
        with pytest.raises(AgentConfigError):
            await agents.stop_matching("")
        assert (await agents.stop_matching("helper-")).total == 2
        assert agents.count_agents() == 0
