"""A pydantic-ai ``Tool`` that delegates to a named agent through a ``Delegation``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic_ai import Tool

from ._delegation import ChainContext, Delegation, TurnLike, current_chain
from ._errors import DelegationError

__all__ = ["delegation_tool"]


def delegation_tool(
    delegation: Delegation,
    target: str,
    *,
    context: Callable[[], TurnLike | ChainContext | None] = current_chain,
    name: str | None = None,
    description: str | None = None,
    refusal: Literal["raise", "tell"] = "raise",
) -> Tool[Any]:
    """A tool ``delegate_to_<target>(message: str) -> str`` for an agent's toolset.

    ``context()`` [``current_chain``] gives the calling turn (pass the agents layer's
    ``current_turn``); with none, the call fails with ``LookupError``. A refusal
    (``DelegationError``) propagates (``refusal="raise"``, the default: the turn fails with the
    typed error) or is returned to the model as text (``"tell"``). The reply is ``str()``-ed."""
    tool_name = name or "delegate_to_" + re.sub(r"[^A-Za-z0-9_]", "_", target)

    async def delegate(message: str) -> str:
        ctx = context()
        if ctx is None:
            raise LookupError(f"{tool_name} was called outside an agent turn")
        try:
            reply = await delegation.delegate(ctx, target, message)
        except DelegationError as exc:
            if refusal == "tell":
                return f"delegation refused: {exc.reason}"
            raise
        return reply if isinstance(reply, str) else str(reply)

    return Tool(
        delegate,
        name=tool_name,
        description=description or f"Ask the agent {target!r} and return its answer.",
        takes_ctx=False,
    )
