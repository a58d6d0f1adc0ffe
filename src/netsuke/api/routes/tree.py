"""``GET /api/v1/tree``: the node's live supervision tree (operator; see ``_tree``).

Root children, the agents' supervisor, one supervisor per agent definition and its sessions
with state (running, idle, hibernated, restarting), restarts and last exit reason. The
dashboard's ``/tree`` renders it and re-reads it on each ``agent.*``, ``process.restarted``
and ``supervisor.gave_up`` event.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .._tree import supervision_tree
from ..deps import Ctx, Operator

__all__ = ["router"]

router = APIRouter(tags=["agents"])


@router.get("/tree", summary="The node's supervision tree")
async def tree(ctx: Ctx, caller: Operator) -> dict[str, Any]:
    """Node → root children → the agents' supervisor → one supervisor per agent definition
    → its sessions, each with ``state``, ``restarts`` and ``last_exit``."""
    return await supervision_tree(ctx)
