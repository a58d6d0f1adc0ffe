"""Delegation: an agent calls another agent as a tool, within limits, leaving a trace.

A chain is the path of agents from the root turn to the current one. ``Delegation.delegate(ctx,
target, message)`` checks, in this order, and refuses with a typed error (nothing runs):

1. ``target`` is among the delegates ``ctx.agent``'s definition allows
   (``DelegationNotAllowedError``);
2. ``target`` is not already in the chain, ``ctx.agent`` included (``DelegationCycleError``);
3. the new depth ``ctx.depth + 1`` is within the chain's limit (``ChainDepthError``): the
   smallest ``max_chain_depth`` of the agents already in the chain, the entry (root) agent's
   included. The entry agent's limit therefore bounds the whole chain, and no agent down the
   chain can extend it, only narrow it. The root turn has depth 0.

Then it runs ``run(target, message, child)`` with the child context: a new ``execution_id``
whose ``parent_execution_id`` is ``ctx.execution_id``, the chain and its execution ids extended
by one. With a ``store``, the child execution is recorded (``kind="agent_turn"``, ``parent_id``
= the caller's execution) before the run and closed after it, so
``store.executions.chain(root_execution_id)`` shows the whole chain; pass no store when ``run``
records its turns itself (the agents facade does, with ``parent=``). During ``run`` the child
context is current (``current_chain()``), so a delegation tool called inside it finds its
caller without being told.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from netsuke.events import EventBus
from netsuke.store import Execution, Store, new_id

from ._errors import ChainDepthError, DelegationCycleError, DelegationNotAllowedError
from ._observe import METRICS, log, tracer

__all__ = [
    "ChainContext",
    "Delegation",
    "Runner",
    "TurnLike",
    "current_chain",
]


class TurnLike(Protocol):
    """What delegation reads of a turn context (the agents layer's ``TurnContext`` fits)."""

    @property
    def agent(self) -> str: ...

    @property
    def execution_id(self) -> str | None: ...

    @property
    def chain(self) -> tuple[str, ...]: ...

    @property
    def depth(self) -> int: ...


@dataclass(frozen=True)
class ChainContext:
    """A position in a delegation chain. ``chain`` runs from the root agent to ``agent``
    (included); ``execution_ids`` likewise; ``depth`` is ``len(chain) - 1``."""

    agent: str
    execution_id: str | None = None
    chain: tuple[str, ...] = ()
    execution_ids: tuple[str | None, ...] = ()
    session: str | None = None
    user: str | None = None
    parent_execution_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.chain or self.chain[-1] != self.agent:
            object.__setattr__(self, "chain", (*self.chain, self.agent))
        if len(self.execution_ids) < len(self.chain):
            ids = (*self.execution_ids, self.execution_id)
            ids = (None,) * (len(self.chain) - len(ids)) + ids
            object.__setattr__(self, "execution_ids", ids)

    @property
    def depth(self) -> int:
        return len(self.chain) - 1

    @classmethod
    def of(cls, turn: TurnLike | ChainContext) -> ChainContext:
        """A ``ChainContext`` from any turn context (its ``chain`` with or without itself)."""
        if isinstance(turn, ChainContext):
            return turn
        chain = tuple(turn.chain)
        if not chain or chain[-1] != turn.agent:
            chain = (*chain, turn.agent)
        return cls(
            agent=turn.agent,
            execution_id=turn.execution_id,
            chain=chain,
            session=getattr(turn, "session", None),
            user=getattr(turn, "user", None),
            parent_execution_id=getattr(turn, "parent_execution_id", None),
        )

    def child(self, target: str) -> ChainContext:
        return ChainContext(
            agent=target,
            execution_id=new_id(),
            chain=(*self.chain, target),
            execution_ids=(*self.execution_ids, None),
            session=self.session,
            user=self.user,
            parent_execution_id=self.execution_id,
        )


Runner = Callable[[str, str, ChainContext], Awaitable[Any]]
"""``run(target, message, child_context)``: runs one turn of ``target`` and returns its reply."""

_current: contextvars.ContextVar[ChainContext | None] = contextvars.ContextVar(
    "netsuke_chain", default=None
)


def current_chain() -> ChainContext | None:
    """The chain context of the delegated run in progress, or ``None``."""
    return _current.get()


class Delegation:
    """The delegation policy plus a runner. ``delegates``: the allowed delegates per agent (a
    mapping, or a function of the agent name returning them or ``None``; unknown agents may
    delegate to no one).
    ``max_chain_depth`` [``3``]: an int or a function of the delegating agent's name."""

    def __init__(
        self,
        run: Runner,
        *,
        delegates: Mapping[str, Iterable[str]] | Callable[[str], Iterable[str] | None],
        max_chain_depth: int | Callable[[str], int] = 3,
        store: Store | None = None,
        events: EventBus | None = None,
    ) -> None:
        self._run = run
        if callable(delegates):
            self._delegates: Callable[[str], Iterable[str] | None] = delegates
        else:
            table = {k: frozenset(v) for k, v in delegates.items()}
            self._delegates = lambda agent: table.get(agent, frozenset())
        self._depth = max_chain_depth
        self.store = store
        self.events = events

    @classmethod
    def for_definitions(
        cls,
        run: Runner,
        definitions: Mapping[str, Any],
        *,
        store: Store | None = None,
        events: EventBus | None = None,
        default_depth: int = 3,
    ) -> Delegation:
        """The policy the agents' definitions state: ``definitions`` maps an agent name to
        anything with ``delegates`` and ``max_chain_depth`` (the store's ``AgentDefinition``,
        an ``AgentSpec``); an agent without a definition may delegate to no one."""

        def delegates(agent: str) -> Iterable[str] | None:
            d = definitions.get(agent)
            return None if d is None else list(getattr(d, "delegates", ()) or ())

        def depth(agent: str) -> int:
            d = definitions.get(agent)
            return default_depth if d is None else int(getattr(d, "max_chain_depth", default_depth))

        return cls(run, delegates=delegates, max_chain_depth=depth, store=store, events=events)

    def max_depth(self, agent: str) -> int:
        return self._depth(agent) if callable(self._depth) else self._depth

    def chain_limit(self, chain: Iterable[str]) -> int:
        """The depth a chain may reach: the smallest ``max_chain_depth`` of its agents (so the
        entry agent's limit bounds the whole chain)."""
        if not callable(self._depth):
            return self._depth
        return min(self._depth(agent) for agent in chain)

    def check(self, ctx: TurnLike | ChainContext, target: str) -> ChainContext:
        """Raise the typed refusal for ``ctx.agent -> target``, or return the child context."""
        c = ChainContext.of(ctx)
        if target not in set(self._delegates(c.agent) or ()):
            METRICS.delegations["not_allowed"] += 1
            raise DelegationNotAllowedError(c.agent, target, c.chain)
        if target in c.chain:
            METRICS.delegations["cycle"] += 1
            raise DelegationCycleError(c.agent, target, c.chain)
        limit = self.chain_limit(c.chain)
        if c.depth + 1 > limit:
            METRICS.delegations["depth"] += 1
            raise ChainDepthError(c.agent, target, c.chain, c.depth + 1, limit)
        return c.child(target)

    @contextmanager
    def entered(self, ctx: TurnLike | ChainContext) -> Iterator[ChainContext]:
        """Make ``ctx`` the current chain (for a root turn that offers delegation tools)."""
        c = ChainContext.of(ctx)
        token = _current.set(c)
        try:
            yield c
        finally:
            _current.reset(token)

    async def delegate(self, ctx: TurnLike | ChainContext, target: str, message: str) -> Any:
        """Check, record, run ``target`` with ``message`` as a child of ``ctx``; its reply."""
        try:
            child = self.check(ctx, target)
        except Exception as exc:
            log.info("delegation.refused", error=str(exc))
            raise
        log.info(
            "delegation.start",
            agent=child.chain[-2],
            target=target,
            depth=child.depth,
            execution=child.execution_id,
            parent=child.parent_execution_id,
        )
        if self.store is not None:
            await self.store.executions.record(
                Execution(
                    id=child.execution_id or new_id(),
                    kind="agent_turn",
                    status="running",
                    agent_name=target,
                    session_id=child.session,
                    parent_id=child.parent_execution_id,
                    details={"delegated_by": child.chain[-2], "chain": list(child.chain)},
                )
            )
        token = _current.set(child)
        try:
            with tracer.start_as_current_span(
                "routing.delegate",
                attributes={"agent": child.chain[-2], "target": target, "depth": child.depth},
            ):
                result = await self._run(target, message, child)
        except BaseException as exc:
            METRICS.delegations["error"] += 1
            if self.store is not None and child.execution_id is not None:
                await self.store.executions.finish(
                    child.execution_id, status="failed", error=repr(exc)[:2000]
                )
            raise
        finally:
            _current.reset(token)
        METRICS.delegations["ok"] += 1
        if self.store is not None and child.execution_id is not None:
            await self.store.executions.finish(child.execution_id, status="succeeded")
        return result
