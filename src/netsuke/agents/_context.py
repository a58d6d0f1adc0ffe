"""The turn context: who is running, for whom, and in which delegation chain.

``current_turn()`` returns the ``TurnContext`` of the turn whose code is running (the model call
and every tool it starts, which run in the turn's task), or ``None`` outside any turn. A tool
that asks another agent to work passes it on: ``await agents.run(other, msg,
parent=current_turn())``; the delegated turn's execution row then records
``parent_execution_id`` and its chain grows by one agent. The policy on who may delegate to
whom belongs to the routing layer; this module only carries the facts.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from netsuke.kernel import Pid

__all__ = ["TurnContext", "current_turn"]

_CURRENT: ContextVar[TurnContext | None] = ContextVar("netsuke_turn", default=None)


class _RowState:
    """Whether the turn's execution row was written early (a delegated turn needs its
    parent's row to exist before its own), shared by every copy of the context."""

    __slots__ = ("future", "parent")

    def __init__(self, parent: TurnContext | None = None) -> None:
        self.future: asyncio.Future[None] | None = None
        self.parent = parent


@dataclass(frozen=True, slots=True)
class TurnContext:
    """One turn: ``agent`` (definition name), ``session`` (the server's registered name),
    ``user``, ``execution_id`` (its execution row), ``parent_execution_id`` (the turn that
    delegated it, or ``None``), ``chain`` (agent names root → current) and ``depth``
    (``len(chain) - 1``). ``task`` is the pid of the turn's task: link helper tasks to it and
    they stop when the turn is cancelled or times out."""

    agent: str
    session: str
    user: str | None
    execution_id: str
    parent_execution_id: str | None = None
    chain: tuple[str, ...] = ()
    task: Pid | None = None
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    _row: _RowState = field(default_factory=_RowState, repr=False, compare=False)

    @property
    def depth(self) -> int:
        return len(self.chain) - 1

    def with_task(self, task: Pid | None) -> TurnContext:
        return TurnContext(
            self.agent,
            self.session,
            self.user,
            self.execution_id,
            self.parent_execution_id,
            self.chain,
            task,
            self.started_at,
            self.extra,
            self._row,
        )


def current_turn() -> TurnContext | None:
    """The context of the turn running this code, or ``None``."""
    return _CURRENT.get()


def set_turn(ctx: TurnContext | None) -> Any:
    return _CURRENT.set(ctx)
