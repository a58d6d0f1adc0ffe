"""A cluster member hosting agents, as a separate OS process, for the failover tests and the
failover benchmark: ``python -m tests.cluster.agent_node_main NATS_URL PREFIX NAME DB_URL
LEASE [FAST]``. It joins with a membership lease in the store, opens the store (session
ownership judged by the leases), starts ``Agents`` and the ``Failover`` (a gone member's
sessions restart here), then prints ``<node> <id>`` of its controller ``ctl`` on one line and
runs until killed, logging at ``info`` (``$NETSUKE_TEST_NODE_LOG_LEVEL``) on stderr (a file
of the harness). ``FAST`` (``1``, the default) uses the tests' short heartbeats; ``0`` the
defaults (heartbeat 0.5 s, down after 3 s), as ``netsuke serve``.

Agents (all with the offline model; a prompt containing ``slow`` makes the model wait
``SLOW`` seconds first): ``perm`` (``restart="permanent"``), ``trans`` (transient),
``temp`` (temporary), ``evictable`` (transient, evicted after 0.5 s idle), ``owned``
(transient, ``owner_policy="stop"``), ``owned-temp`` (temporary, ``owner_policy="stop"``),
``kept`` (transient, ``owner_policy="hibernate"``).

The controller answers calls (errors come back as ``("error", type name, message)``):

* ``("start", agent, session, owner)``: start the session (``owner`` a pid or ``None``);
  returns its pid;
* ``("run", session, message, request_id)``: one turn; returns ``("ok", output, epoch)``
  with the epoch the session's process holds after it; every outcome is also recorded;
* ``("outcomes",)``: ``{request id: "ok" or error type name}`` of the turns run here;
* ``("whereis", session)``: the local pid or ``None``;
* ``("state", session)``: the local agent's status state or ``None``;
* ``("owner",)``: start an idle process here (to own a session on another node);
* ``("owner_of", session)``: the local agent's owner (its status's ``owner``, the pid's repr)
  or ``("not running",)``;
* ``"status"``: ``{"fenced", "moved", "node"}``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.agents import AgentConfig, Agents, MemoryPolicy
from netsuke.agents._offline import _decide
from netsuke.cluster import Failover, join_cluster
from netsuke.kernel import NOREPLY, From, Process
from netsuke.observability import configure_logging
from netsuke.store import NodeIdentity, Store

from .helpers import FAST

SLOW = 3.0

STATE: dict[str, Any] = {}
TASKS: set[asyncio.Task[None]] = set()


async def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    last = messages[-1] if messages else None
    if isinstance(last, ModelRequest) and any(
        isinstance(p, UserPromptPart) and "slow" in str(p.content) for p in last.parts
    ):
        await asyncio.sleep(SLOW)
    return _decide(messages, info)


def configs() -> dict[str, AgentConfig]:
    model = FunctionModel(_respond, model_name="offline-slow")
    return {
        "perm": AgentConfig(name="perm", model=model, restart="permanent"),
        "trans": AgentConfig(name="trans", model=model, memory=MemoryPolicy(max_messages=20)),
        "temp": AgentConfig(name="temp", model=model, restart="temporary"),
        "evictable": AgentConfig(
            name="evictable", model=model, idle_hibernate=None, idle_evict=0.5
        ),
        "owned": AgentConfig(name="owned", model=model, owner_policy="stop"),
        "owned-temp": AgentConfig(
            name="owned-temp", model=model, owner_policy="stop", restart="temporary"
        ),
        "kept": AgentConfig(name="kept", model=model, owner_policy="hibernate"),
    }


class Idle(Process):
    """Owns sessions for the owner-link tests; stops when called ``"stop"``."""

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "stop":
            self.stop("normal")
        return "ok"


class Controller(Process):
    def handle_call(self, request: Any, from_: From) -> Any:
        """Each request in a task of its own (a slow turn must not hold the others up)."""
        task = asyncio.ensure_future(self._answer(request, from_))
        TASKS.add(task)
        task.add_done_callback(TASKS.discard)
        return NOREPLY

    async def _answer(self, request: Any, from_: From) -> None:
        agents: Agents = STATE["agents"]
        try:
            out = await self._handle(agents, request)
        except Exception as e:
            out = ("error", type(e).__name__, str(e)[:300])
        self.reply(from_, out)

    async def _handle(self, agents: Agents, request: Any) -> Any:
        if request == "status":
            return {
                "fenced": STATE["node"].membership.fenced,
                "moved": STATE["failover"].moved,
                "node": STATE["node"].node_id,
            }
        op = request[0]
        if op == "start":
            _, agent, session, owner = request
            return await agents.start_agent(session, STATE["configs"][agent], owner=owner)
        if op == "run":
            _, session, message, rid = request
            outcomes: dict[str, str] = STATE["outcomes"]
            try:
                r = await agents.run_turn(session, message, request_id=rid)
            except Exception as e:
                outcomes[rid] = type(e).__name__
                raise
            outcomes[rid] = "ok"
            p = agents.rt.process(session)
            return ("ok", r.output, getattr(p, "_epoch", None))
        if op == "owner":  # a process on this node to own a session elsewhere
            return await agents.rt.start(Idle)
        if op == "owner_of":
            if agents.whereis(request[1]) is None:
                return ("not running",)
            return (await agents.status(request[1]))["owner"]
        if op == "outcomes":
            return dict(STATE["outcomes"])
        if op == "whereis":
            return agents.whereis(request[1])
        if op == "state":
            if agents.whereis(request[1]) is None:
                return None
            return (await agents.status(request[1]))["state"]
        return ("error", "ValueError", repr(request))


async def main(url: str, prefix: str, name: str, db_url: str, lease: str, fast: str = "1") -> None:
    # its log (stderr) goes to a file of the harness, shown when a test fails
    configure_logging(os.environ.get("NETSUKE_TEST_NODE_LOG_LEVEL", "info"))
    lease_s = float(lease)
    transport = {**(FAST if fast == "1" else {}), "prefix": prefix}
    async with (
        Store.open(db_url) as store,
        join_cluster(url, name, store.database, lease=lease_s, transport_options=transport) as node,
    ):
        m = node.membership
        assert m.incarnation is not None
        store.conversations.set_ownership(NodeIdentity(m.name, m.incarnation), m)
        agents = await Agents.start(node.runtime, store)
        cfgs = configs()
        for cfg in cfgs.values():
            agents.define(cfg)
        STATE.update(node=node, agents=agents, configs=cfgs, outcomes={})
        async with Failover(node, agents) as failover:
            STATE["failover"] = failover
            pid = await node.runtime.start(Controller, name="ctl")
            assert pid is not None
            print(pid.node, pid.id, flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
