"""Delegation across nodes (issue 17, part 4), with ``netsuke serve --cluster`` node processes
on one store and a real nats-server: a delegate pinned by its definition's ``node_labels`` to
another node runs there (placement), as a child of the calling turn, with one memory per
caller's conversation and user; the chain's depth limit set by the entry agent on one node
holds for a delegation made on the other node; and a delegate whose node freezes mid-turn
gives the caller a typed error (``TurnCancelledError``, ``noconnection``), never a hang. A
capability-routed call from a node where no agent offers the capability reaches the one
running on another node."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from netsuke.agents import tool_idempotency_key
from netsuke.cluster import join_cluster
from netsuke.cluster._delegates import ClusterAgents
from netsuke.cluster._forward import SessionService
from netsuke.manager.testing import NatsServer
from netsuke.node import Node
from netsuke.routing import NoRouteError
from netsuke.store import NodeIdentity, Store, upgrade

from . import serve_node as N
from .helpers import prefix
from .test_forwarding import NODE, _env, _start, _stop

pytestmark = pytest.mark.timeout(420)


def _defs(folder: Path) -> None:
    folder.mkdir()
    pinned = "config:\n  node_labels:\n    gpu: a100\n"  # only gamma carries gpu=a100
    files = {
        "billing": f"name: billing\nmodel: offline\n{pinned}",
        "researcher": "name: researcher\nmodel: offline\ndelegates: [billing]\n",
        # seed 004's entry-agent rule: a's limit (1) bounds the whole chain
        "a": "name: a\nmodel: offline\ndelegates: [b]\nmax_chain_depth: 1\n",
        "b": f"name: b\nmodel: offline\ndelegates: [c]\nmax_chain_depth: 5\n{pinned}",
        "c": "name: c\nmodel: offline\n",
    }
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)


async def _say(http: httpx.AsyncClient, url: str, session: str, text: str) -> dict[str, Any]:
    r = await http.post(f"{url}/api/v1/sessions/{session}/messages", json={"message": text})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body["node"] = r.headers[NODE]
    return body


async def test_a_delegate_on_another_node_keeps_memory_per_user_and_the_chain_limit(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    _defs(tmp_path / "agents")
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": prefix(),
        "NETSUKE_AGENTS_DIR": str(tmp_path / "agents"),
    }
    procs: list[subprocess.Popen[str]] = []
    try:
        key, (a_url, g_url) = await N.start_nodes(
            ("alpha", "gamma"), nats_server.url, common, tmp_path, procs, _start
        )
        gamma = procs[1]
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            await N.wait_members(http, a_url, 2)
            for user in ("ann", "bob"):
                r = await http.post(
                    f"{a_url}/api/v1/sessions", json={"agent": "researcher", "user": user}
                )
                assert r.status_code == 201, r.text
                assert r.headers[NODE].startswith("alpha#")  # placed where it was asked

            # ann's researcher (alpha) delegates to billing, which only gamma may host
            first = await _say(
                http, a_url, "researcher-ann", "delegate_to_billing 'my card is 4242'"
            )
            assert first["node"].startswith("alpha#")
            assert "4242" in first["output"] and "turn 1" in first["output"], first
            view = await http.get(f"{a_url}/api/v1/sessions/billing@researcher-ann")
            assert view.status_code == 200, view.text
            assert view.json()["node"].startswith("gamma#")
            assert view.json()["user"] == "ann"  # recorded for the caller's user
            # the delegated turn is a child of the calling turn, with the whole chain
            ex = await http.get(
                f"{a_url}/api/v1/executions", params={"session_id": "billing@researcher-ann"}
            )
            child = ex.json()["items"][0]
            assert child["parent_id"] == first["execution_id"], child
            assert child["details"]["chain"] == ["researcher", "billing"]

            # bob, through the same delegate agent on gamma, sees nothing of ann's
            told_bob = await _say(http, a_url, "researcher-bob", "delegate_to_billing 'hello'")
            assert "4242" not in told_bob["output"] and "turn 1" in told_bob["output"]
            # ann's delegate keeps ann's memory across turns
            again = await _say(
                http, a_url, "researcher-ann", "delegate_to_billing 'what did I say'"
            )
            assert "turn 2" in again["output"] and "4242" in again["output"], again
            bob_history = await http.get(f"{g_url}/api/v1/sessions/billing@researcher-bob/messages")
            assert bob_history.status_code == 200 and "4242" not in bob_history.text

            # the delegate is owned by its caller's session across nodes: it stops with it
            gone = await http.delete(f"{a_url}/api/v1/sessions/researcher-bob")
            assert gone.status_code == 204, gone.text
            state = None
            for _ in range(300):
                state = (await http.get(f"{g_url}/api/v1/sessions/billing@researcher-bob")).json()
                if state["state"] == "stopped":
                    break
                await asyncio.sleep(0.1)
            assert state is not None and state["state"] == "stopped", state

            # a (limit 1, on alpha) -> b (on gamma) -> c: refused on gamma at depth 2
            r = await http.post(f"{a_url}/api/v1/sessions", json={"agent": "a", "user": "ann"})
            assert r.status_code == 201, r.text
            reply = await _say(
                http, a_url, "a-ann", "delegate_to_b 'delegate_to_c \"delegate_to_d bye\"'"
            )
            assert "depth 2 exceeds max_chain_depth 1" in reply["output"], reply
            b_view = await http.get(f"{a_url}/api/v1/sessions/b@a-ann")
            assert b_view.json()["node"].startswith("gamma#")
            ran = await http.get(f"{a_url}/api/v1/executions", params={"agent": "c"})
            assert ran.json()["items"] == []  # c never ran

            # the caller's request id travels: the forwarded delegated turn is stored under
            # a request id derived from it (a retry of the caller finds the delegate's reply)
            keyed = await http.post(
                f"{a_url}/api/v1/sessions/researcher-ann/messages",
                json={"message": "delegate_to_billing 'keyed one'"},
                headers={"Idempotency-Key": "k-1"},
            )
            assert keyed.status_code == 200, keyed.text
            tool_key = tool_idempotency_key("researcher-ann", "k-1", 0)
            digest = hashlib.sha256(
                f"{tool_key}\x00billing@researcher-ann\x00{'keyed one'!r}".encode()
            ).hexdigest()
            async with Store.open(db) as store:
                stored = await store.conversations.find_request(
                    "billing@researcher-ann", f"dlg-{digest[:40]}"
                )
            assert stored is not None and "keyed one" in stored.reply

            # the delegate's node freezes mid-delegation: a typed error, no hang. (A new
            # delegate: failover restarts ann's existing one on alpha once gamma is seen down,
            # without looking at labels. Should this request reach alpha only after gamma's
            # lease was revoked, the new delegate has no node: NoNodeAvailableError.)
            r = await http.post(
                f"{a_url}/api/v1/sessions", json={"agent": "researcher", "user": "dan"}
            )
            assert r.status_code == 201, r.text
            os.kill(gamma.pid, signal.SIGSTOP)
            frozen = await _say(
                http, a_url, "researcher-dan", "delegate_to_billing 'are you there'"
            )
            out = frozen["output"]
            assert ("TurnCancelledError" in out and "noconnection" in out) or (
                "NoNodeAvailableError" in out
            ), frozen
            # ... and once it is dead, a new delegate pinned to its labels has no node left
            # (ann's existing one may be restarted elsewhere by failover, which does not look
            # at labels): a typed error, whether or not its lease was revoked yet
            os.kill(gamma.pid, signal.SIGKILL)
            r = await http.post(
                f"{a_url}/api/v1/sessions", json={"agent": "researcher", "user": "cat"}
            )
            assert r.status_code == 201, r.text
            dead = await _say(http, a_url, "researcher-cat", "delegate_to_billing 'anyone'")
            assert "NoNodeAvailableError" in dead["output"], dead
    finally:
        for p in procs:
            _stop(p)


async def test_a_capability_routed_call_reaches_an_agent_on_another_node(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A member (this test process, a ``Node`` with ``ClusterAgents``) where no agent offers
    ``summarise`` routes to the one running on gamma; the conversation's session is placed on
    gamma (its definition's labels) and keeps one memory per conversation and user."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "summer.yaml").write_text(
        "name: summer\nmodel: offline\ncapabilities: [summarise]\n"
        "config:\n  node_labels:\n    gpu: a100\n"
    )
    pfx = prefix()
    common = {
        "NETSUKE_DATABASE_URL": db,
        "NETSUKE_CLUSTER_PREFIX": pfx,
        "NETSUKE_AGENTS_DIR": str(tmp_path / "agents"),
    }
    gamma, g_url, key = await _start(
        "gamma", nats_server.url, _env(**common, NETSUKE_BOOTSTRAP_ADMIN="true"), tmp_path
    )
    try:
        assert key is not None
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            r = await http.post(f"{g_url}/api/v1/sessions", json={"agent": "summer", "user": "x"})
            assert r.status_code == 201, r.text
        async with join_cluster(
            nats_server.url, "router", db, transport_options={"prefix": pfx}
        ) as member:
            m = member.membership
            assert m.incarnation is not None
            async with Node.open(db, runtime=member.runtime, sandbox=False) as node:
                node.store.conversations.set_ownership(NodeIdentity(m.name, m.incarnation), m)
                service = SessionService(member.transport, member.runtime.events)
                ClusterAgents(node.agents, service).install()
                await service.start()
                try:
                    route = ["summarise"]
                    first = await node.process(
                        "my secret is 77", capabilities=route, conversation_id="c1", user="ann"
                    )
                    assert "77" in str(first) and "turn 1" in str(first), first
                    bob = await node.process(
                        "hello", capabilities=route, conversation_id="c1", user="bob"
                    )
                    assert "77" not in str(bob) and "turn 1" in str(bob)
                    again = await node.process(
                        "what was it", capabilities=route, conversation_id="c1", user="ann"
                    )
                    assert "77" in str(again) and "turn 2" in str(again), again
                    assert node.agents.whereis("summer@ann:c1") is None  # not run here
                    conv = await node.store.conversations.get("summer@ann:c1")
                    assert (conv.owner_node, conv.user_id) == ("gamma", "ann")
                    with pytest.raises(NoRouteError):
                        await node.process("x", capabilities=["nobody-offers-this"])
                finally:
                    await service.close()
    finally:
        _stop(gamma)
