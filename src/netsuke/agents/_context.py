"""The turn context: who is running, for whom, and in which delegation chain.

``current_turn()`` returns the ``TurnContext`` of the turn whose code is running (the model call
and every tool it starts, which run in the turn's task), or ``None`` outside any turn. A tool
that asks another agent to work passes it on: ``await agents.run(other, msg,
parent=current_turn())``; the delegated turn's execution row then records
``parent_execution_id`` and its chain grows by one agent. The policy on who may delegate to
whom belongs to the routing layer; this module only carries the facts.

``current_tool_call()`` returns the ``ToolCall`` whose tool is running: its name, the model's
tool call id, its index among the turn's tool calls, and a stable ``idempotency_key``
(``tool_idempotency_key``: derived from the session, the turn's request id and the index) that a
tool passes to the systems it changes (a payment API's ``Idempotency-Key``, a unique column),
so that a turn re-run after a failover does not do the same side effect twice. Tools run
*at least once* per acknowledged turn: a turn cut off by a failover ran its tools without
being committed, and its retry runs them again.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from netsuke.kernel import Pid

__all__ = ["ToolCall", "TurnContext", "current_tool_call", "current_turn", "tool_idempotency_key"]

_CURRENT: ContextVar[TurnContext | None] = ContextVar("netsuke_turn", default=None)
_TOOL: ContextVar[ToolCall | None] = ContextVar("netsuke_tool_call", default=None)


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
    request_id: str | None = None
    """The caller's request id (the API's ``Idempotency-Key``), or ``None``."""
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
            self.request_id,
            self._row,
        )


def current_turn() -> TurnContext | None:
    """The context of the turn running this code, or ``None``."""
    return _CURRENT.get()


def set_turn(ctx: TurnContext | None) -> Any:
    return _CURRENT.set(ctx)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The tool call running now: ``tool_name``, the model's ``tool_call_id``, its ``index``
    among the turn's tool calls (0, 1, ... in the order the model asked for them) and its
    ``idempotency_key`` (see ``tool_idempotency_key``)."""

    tool_name: str
    tool_call_id: str | None
    index: int
    idempotency_key: str


def tool_idempotency_key(session: str, request: str, index: int) -> str:
    """The key of tool call ``index`` of the turn answering ``request`` (its request id, or
    its execution id when the caller gave none) in ``session``: 32 hex digits of SHA-256.

    With a request id the key is the same when a retry re-runs the turn on another node and
    the model asks for the same calls in the same order. It is not derived from the model's
    tool call id, which a model chooses anew on every run. Without a request id it is stable
    only within the turn (the execution id is new on each run)."""
    digest = hashlib.sha256(f"{session}\x00{request}\x00{index}".encode())
    return digest.hexdigest()[:32]


def current_tool_call() -> ToolCall | None:
    """The tool call whose code is running, or ``None`` (outside a tool)."""
    return _TOOL.get()


def set_tool_call(call: ToolCall | None) -> Any:
    return _TOOL.set(call)


def reset_tool_call(token: Any) -> None:
    _TOOL.reset(token)
