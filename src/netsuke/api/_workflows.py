"""``WorkflowCatalog`` moved to ``netsuke.node`` (``node.workflows``); imported here for the
routes."""

from netsuke.node import WorkflowCatalog

__all__ = ["WorkflowCatalog"]
