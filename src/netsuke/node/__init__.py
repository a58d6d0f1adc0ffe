"""One node with every layer wired together (store, runtime, sandbox, agents, routing).

``Node.open()`` is the composition root for library users; ``StoredTools`` gives agents
started from stored definitions their stored functions and delegates as tools.
"""

from ._node import AgentHandle, Node
from ._tools import StoredTools

__all__ = ["AgentHandle", "Node", "StoredTools"]
