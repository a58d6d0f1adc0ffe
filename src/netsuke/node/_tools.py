"""Tools for agents started from stored definitions: stored functions and delegates.

``StoredTools`` is the ``tool_resolver`` of ``Agents``: for a definition's spec it returns

* one sandboxed tool per stored function its ``tools`` name (``netsuke.sandbox``), run as a
  child execution of the calling turn, so the function call appears in the turn's chain;
* one delegation tool per agent its ``delegates`` name (``netsuke.routing``), checked against
  the calling definition's ``delegates`` and the chain's depth limit and refused on a cycle.
  The delegate runs in a session of its own per conversation: ``Agents.delegate_session``,
  named ``f"{delegate}@{root session}"`` and recorded for the caller's user, so a delegate
  never carries one user's (or conversation's) memory into another's. It is started from the
  delegate's stored definition when it is not running, owned by the calling session.

Tool names a definition lists that are neither (for instance a built-in provided in code) are
left to the code that starts the agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_ai import Tool

from netsuke.agents import Agents, current_turn
from netsuke.agents._runner import ensure_row
from netsuke.routing import ChainContext, Delegation, delegation_tool
from netsuke.sandbox import FunctionStore, function_tool
from netsuke.store import AgentSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["StoredTools"]


class StoredTools:
    """The ``tool_resolver`` joining the sandbox and delegation (see the module docs)."""

    def __init__(self, agents: Agents, functions: FunctionStore | None) -> None:
        self.agents = agents
        self.functions = functions
        self.specs: dict[str, AgentSpec] = {}
        # no ``store``: the delegate's own turn records its row, with the caller as parent
        self.delegation = Delegation.for_definitions(
            self._run_delegate, self.specs, events=agents.rt.events
        )

    def __call__(self, spec: AgentSpec) -> Sequence[Tool[Any]]:
        self.specs[spec.name] = spec
        tools: list[Tool[Any]] = []
        if self.functions is not None:
            tools.extend(
                function_tool(self.functions, d, parent=self._parent_execution)
                for d in spec.functions
            )
        tools.extend(
            delegation_tool(self.delegation, target, context=current_turn, refusal="tell")
            for target in spec.delegates
            if target != spec.name
        )
        return tools

    async def _run_delegate(self, target: str, message: str, child: ChainContext) -> Any:
        parent = current_turn()
        if parent is None:
            raise LookupError(f"delegating to {target!r} needs a running agent turn")
        remote = self.agents.remote  # a cluster: the delegate may live on another node
        if remote is not None:
            return await remote.delegate(
                target, message, parent, local=lambda: self._run_here(target, message, parent)
            )
        return await self._run_here(target, message, parent)

    async def _run_here(self, target: str, message: str, parent: Any) -> Any:
        try:
            ref = await self.agents.delegate_session(target, parent)
        except Exception as exc:  # no definition, or one that cannot run
            raise LookupError(f"cannot start delegate {target!r}: {exc}") from exc
        return await self.agents.run(ref.session_id, message, parent=parent)

    async def _parent_execution(self) -> str | None:
        """The calling turn's execution id, its row written first (the call's row names it)."""
        turn = current_turn()
        if turn is None:
            return None
        await ensure_row(turn, self.agents.store)
        return turn.execution_id
