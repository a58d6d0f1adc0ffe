"""``NodeTools``: the tools a stored agent definition gets on a node (``Agents.tool_resolver``).

For a spec (``store.factory.spec``), in order:

* each stored sandbox function its ``tools`` name (``spec.functions``, resolved by the store)
  becomes ``netsuke.sandbox.function_tool`` (the current version at each call);
* each of its ``delegates`` becomes ``netsuke.routing.delegation_tool`` ``delegate_to_<name>``,
  under a ``Delegation`` whose policy is the definitions' own ``delegates`` and
  ``max_chain_depth`` (as last resolved), refusals told to the model. The delegate runs as a
  child turn of its instance (the agent process named after the definition), which is started
  from its definition when it is not running.

Tool names that are neither stored functions nor anything the node provides are skipped (the
agent runs without them) and logged once per spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netsuke.agents import Agents, current_turn
from netsuke.kernel import AlreadyStartedError
from netsuke.observability import get_logger
from netsuke.routing import ChainContext, Delegation, delegation_tool
from netsuke.sandbox import FunctionStore, function_tool
from netsuke.store import AgentSpec

__all__ = ["NodeTools"]

log = get_logger("netsuke.api")


class NodeTools:
    """See the module documentation; set ``agents`` once the agent system is started."""

    def __init__(self, functions: FunctionStore) -> None:
        self.functions = functions
        self.agents: Agents | None = None
        self._specs: dict[str, AgentSpec] = {}
        self.delegation = Delegation(
            self._run, delegates=self._delegates, max_chain_depth=self._depth
        )

    def _delegates(self, agent: str) -> tuple[str, ...]:
        spec = self._specs.get(agent)
        return spec.delegates if spec is not None else ()

    def _depth(self, agent: str) -> int:
        spec = self._specs.get(agent)
        return spec.max_chain_depth if spec is not None else 0

    async def _run(self, target: str, message: str, child: ChainContext) -> Any:
        agents = self.agents
        if agents is None:
            raise LookupError("the node's agent system is not started")
        if agents.whereis(target) is None:
            try:
                await agents.start_defined(target)
            except AlreadyStartedError:
                pass
        return await agents.run(target, message, parent=current_turn())

    def resolve(self, spec: AgentSpec) -> Sequence[Any]:
        """The tool objects for ``spec`` (see the module documentation)."""
        self._specs[spec.name] = spec
        tools: list[Any] = [function_tool(self.functions, d) for d in spec.functions]
        provided = {d.name for d in spec.functions}
        missing = [t for t in spec.tools if t not in provided]
        if missing:
            log.warning("api.agent_tools_missing", agent=spec.name, tools=missing)
        tools += [
            delegation_tool(self.delegation, target, context=current_turn, refusal="tell")
            for target in spec.delegates
        ]
        return tools
