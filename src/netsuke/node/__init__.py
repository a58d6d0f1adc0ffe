"""One node with every layer wired together (store, runtime, sandbox, agents, routing).

``Node.open()`` is the one composition root, for library users and for the server
(``netsuke.api.open_node`` builds its node with it); ``StoredTools`` gives agents started from
stored definitions their stored functions and delegates as tools; ``WorkflowCatalog`` is
``node.workflows``, the workflows the node runs by name.
"""

from ._node import AgentHandle, Node
from ._tools import StoredTools
from ._workflows import WorkflowCatalog

__all__ = ["AgentHandle", "Node", "StoredTools", "WorkflowCatalog"]
