"""Delegation wired to the agents layer: run the delegate as a real agent turn.

``agents_runner(agents)`` is a ``Runner`` for ``Delegation``: it runs ``agents.run(target,
message, parent=current_turn())``, so the delegated turn is an ordinary turn of the target
agent (its session named ``target``, started or revived by the agents layer), recorded by the
agents layer with ``parent_id`` = the calling turn's execution and ``details.chain``. Build the
``Delegation`` without a ``store`` then (the turns are recorded already), and give the agent a
``delegation_tool(delegation, target, context=current_turn)``.
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
        return await agents.run(target, message, parent=parent)

    return run
