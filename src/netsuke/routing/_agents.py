"""Delegation wired to the agents layer: run the delegate as a real agent turn.

``agents_runner(agents)`` is a ``Runner`` for ``Delegation``: it runs ``agents.run(session,
message, parent=current_turn())``, so the delegated turn is an ordinary turn of the target
agent, recorded by the agents layer with ``parent_id`` = the calling turn's execution and
``details.chain``. The session is ``agents.delegate_session(target, parent)``: the target's
session for the chain's root conversation (``f"{target}@{root session}"``, started with the
configuration of the running instance named ``target`` or ``agents.config_for(target)``), so
a delegate never shares its memory between conversations or users. Build the
``Delegation`` without a ``store`` then (the turns are recorded already), and give the agent a
``delegation_tool(delegation, target, context=current_turn)``.

On a cluster member (``agents.remote`` set, ``netsuke.cluster.ClusterAgents``) the delegate
session may live on another node, or placement may put a new one there: the turn is then
forwarded to that node with the chain context (see ``docs/cluster.md``, "Delegation, routing
and queries across nodes").
"""

from __future__ import annotations

from typing import Any

from netsuke.agents import Agents, current_turn

from ._delegation import ChainContext, Runner

__all__ = ["agents_runner"]


def agents_runner(agents: Agents) -> Runner:
    """A ``Runner`` that runs the delegate through ``agents.run`` as a child of the current
    turn. ``LookupError`` when called outside an agent turn."""

    async def run(target: str, message: str, child: ChainContext) -> Any:
        parent = current_turn()
        if parent is None:
            raise LookupError(f"delegating to {target!r} needs a running agent turn")

        async def here() -> Any:
            assert parent is not None
            ref = await agents.delegate_session(target, parent)
            return await agents.run(ref.session_id, message, parent=parent)

        if agents.remote is not None:  # a cluster member: the delegate may be on another node
            return await agents.remote.delegate(target, message, parent, local=here)
        return await here()

    return run
