"""The agent server: a kernel process hosting one agent session.

Requests (through ``Agents`` or ``rt.call``):

* ``("run", message, parent, sink, ticket, audit, request)`` (the last three optional;
  ``request``: ``(request id, body hash)``, stored with the turn, see ``Agents.run_turn``):
  validate ``message`` (``InvalidInputError`` before anything runs), refuse when
  ``max_queue`` turns are waiting (``AgentBusyError``), else queue the turn and answer when
  it is committed. Turns run one at a time, in order, each in a supervised task
  (``rt.tasks``) with the agent's ``turn_timeout``; the server keeps serving ``status``,
  ``history``, ``cancel`` and ``attach_owner`` meanwhile.
* ``"status"``, ``"history"`` (the in-process memory, or ``None`` when hibernated),
  ``"cancel"`` (kills the running turn's task: the model call and the async tools it started;
  returns whether a turn was running), ``("attach_owner", pid)``.

A failed, cancelled or timed-out turn answers its caller with a ``TurnError`` and leaves the
memory as it was; its execution row records the failure. The memory is loaded from the store
lazily (first turn after a start, a restart or a hibernation), in the turn's task, so a
restarted server sees the whole conversation and the server itself never waits on the store.

Fencing: each process hosting the session claims it (a new *incarnation* in the conversation
row) before it loads the history: a new session in ``init``, a restarted or revived one in its
first turn's task. Every turn commits with that incarnation and is refused (``FencedError``)
once a successor claimed the session, so a killed server's turn, whose task runs on, can
never land behind its successor's back. A fenced commit (or a claim refused because another
live node owns the session) fails the turn with ``SessionMovedError``: nothing stored, the
caller told it failed. A caller whose server died reads its turn's true
outcome from its ``TurnTicket`` (see there); a turn that has begun to commit is no longer
cancelled, stopped or timed out.

Definition versions: before each turn a session of a stored definition whose newer version
is known (``Agents.is_stale``, a dictionary lookup) moves to it under ``version_policy
"next_turn"``; every (re)start runs the newest known version.

Exit reasons: ``"normal"`` when evicted after ``idle_evict`` (the session is then revived by
the next message), ``"shutdown"`` when stopped or when its owner exits under
``owner_policy="stop"``; an exception when it crashes (the supervisor restarts it: sessions are
``transient`` children).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from netsuke.events import topics
from netsuke.kernel import NOREPLY, SHUTDOWN, Down, Exit, ExitReason, From, Pid, Process, Ref
from netsuke.kernel import is_normal_or_shutdown as _normal
from netsuke.store import FencedError, SessionOwnedError, new_id

from ._config import AgentConfig
from ._context import TurnContext, _RowState
from ._endpoints import redact_secrets
from ._errors import (
    AgentBusyError,
    AgentError,
    SessionMovedError,
    TurnCancelledError,
    TurnError,
    TurnTimeoutError,
)
from ._memory import MemoryPolicy
from ._metrics import METRICS, log, tracer
from ._owners import encode_owner, is_cluster_node
from ._runner import TurnResult, execute_turn, record_failure
from ._schema import plain_prompt
from ._tools import wait_tools

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelMessage

    from ._system import Agents

__all__ = ["AgentServer", "SessionArg", "TurnTicket", "agent_load"]


class SessionArg:
    """The start argument of a session; kept by the supervisor for restarts, so an attached
    owner survives a restart. A session taken over from another node gets its stored owner
    (``Agents.revive``): ``owner_lost`` is then the reason its owner link fires with at once
    (``noconnection``: the owner was on a node that is gone), else it is monitored again."""

    __slots__ = (
        "config",
        "epoch",
        "exclusive",
        "known",
        "owner",
        "owner_lost",
        "session",
        "starts",
        "system",
        "user",
    )

    def __init__(
        self,
        system: Agents,
        config: AgentConfig,
        session: str,
        user: str | None,
        owner: Pid | None = None,
        known: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.system = system
        self.exclusive = exclusive  # a refused claim fails the start (the caller forwards)
        self.config = config
        self.session = session
        self.user = user
        self.owner = owner
        self.owner_lost: str | None = None  # the owner is known gone (its node): used once
        self.known = known
        self.starts = 0
        self.epoch: int | None = None  # claimed for this start already (failover): used once


class TurnTicket:
    """The caller's own line to its turn, next to the server's reply.

    ``Agents`` puts one in each ``run`` request. When the turn's task starts, the server
    marks the ticket started (``execution_id``); when the task ends, it *settles* the ticket
    with the outcome (the ``TurnResult``, or the ``TurnError``) before it reports to the
    server. If the server dies meanwhile (killed, crashed, stopped), its caller gets
    ``ProcessExitedError`` from the kernel at once, while the task, which is not linked to
    the server, runs on and might still commit. The caller then calls ``result(abandon=True)``:
    a task that has not begun to commit is *abandoned* (marked so that it refuses to commit
    when it gets there, and killed): the call fails with the server's death, and the turn can
    never be stored. A task already committing is waited for, and the call answers with what
    really happened: committed (a success), or refused because the session's successor
    claimed it first (a failure, nothing stored). Marking and the task's own check before its
    commit both run on the event loop, so exactly one of the two wins. So no caller is told
    "failed" about a turn that is stored. A turn still queued leaves the ticket unstarted: it
    can never commit, and ``ProcessExitedError`` is the truth."""

    __slots__ = ("execution_id", "outcome", "turn", "waiter")

    def __init__(self) -> None:
        self.execution_id: str | None = None
        self.outcome: Any = None
        self.turn: _Turn | None = None
        self.waiter: asyncio.Future[Any] | None = None

    @property
    def started(self) -> bool:
        return self.execution_id is not None

    def settle(self, outcome: Any) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        # the turn is only needed to abandon it, never once settled; the turn holds this
        # ticket, so keeping it would make a reference cycle per turn, left to the cyclic
        # garbage collector (and promoted to its old generation under load)
        self.turn = None
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(outcome)

    async def result(self, *, abandon: bool = False) -> Any:
        """The turn's ``TurnResult`` once its task has ended; raises its ``TurnError``.
        ``abandon``: unless the task is committing, abandon it and return ``None`` at once."""
        turn = self.turn
        if abandon and self.outcome is None and turn is not None and not turn.committing:
            turn.abandoned = True  # checked by the task right before it would commit
            turn.cancelled = True
            h = turn.handle_ref
            if h is not None:
                h.cancel()
            return None
        outcome = self.outcome
        if outcome is None:
            self.waiter = asyncio.get_running_loop().create_future()
            outcome = await self.waiter
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _Turn:
    __slots__ = (
        "abandoned",
        "audit",
        "began",
        "cancelled",
        "committing",
        "ctx",
        "from_",
        "handle",
        "handle_ref",
        "parent",
        "prompt",
        "reported",
        "request",
        "sink",
        "span",
        "ticket",
    )

    def __init__(
        self,
        from_: From,
        prompt: str,
        parent: TurnContext | None,
        sink: Any,
        ticket: TurnTicket | None,
        audit: Any,
        request: tuple[str, str] | None = None,
    ) -> None:
        self.from_ = from_
        self.request = request  # (request id, body hash), stored with the turn
        self.prompt = prompt
        self.parent = parent
        self.sink = sink
        self.ticket = ticket
        self.audit = audit  # audit rows committed with the turn
        self.cancelled = False
        self.began = False
        self.committing = False  # the task is committing: no cancel or timeout from here on
        self.abandoned = False  # the caller gave up on it (its server died): never commit
        self.reported = False  # the task sent its _TurnDone (set before it exits)
        self.ctx: TurnContext | None = None
        self.handle: Any = None  # cleared by the server when the turn is over
        self.handle_ref: Any = None  # kept: the caller's ticket may kill an orphaned task
        self.span: Any = None

    def commit_begins(self) -> bool:
        """Called by the task right before it commits; ``False`` when its caller abandoned
        it (the task must not commit then). From ``True`` on, the turn ends with the commit's
        outcome: ``cancel`` and ``stop`` leave it be, and its timeout is disarmed, so a caller
        is never told "cancelled" or "timed out" about a turn that is stored."""
        if self.abandoned:
            return False
        self.committing = True
        h = self.handle_ref
        if h is not None:
            h._cancel_timer(None)
        return True


class _TurnDone:
    __slots__ = ("claimed", "loaded", "outcome", "turn")

    def __init__(
        self,
        turn: _Turn,
        outcome: Any,
        loaded: list[ModelMessage] | None,
        claimed: int | None = None,
    ) -> None:
        self.turn = turn
        self.outcome = outcome
        self.loaded = loaded
        self.claimed = claimed


class _TaskDown:
    """The turn's task exited without reporting (killed, timed out, crashed)."""

    __slots__ = ("reason", "turn")

    def __init__(self, turn: _Turn, reason: Any) -> None:
        self.turn = turn
        self.reason = reason


class _OwnerLost:
    """The owner of a session taken over from another node is known gone with its node: its
    link fires at once with ``reason`` (``AgentServer.init``)."""

    __slots__ = ("owner", "reason")

    def __init__(self, owner: Pid, reason: str) -> None:
        self.owner = owner
        self.reason = reason


class _OwnerStored:
    """An attached owner is stored: answer the ``attach_owner`` call."""

    __slots__ = ("from_",)

    def __init__(self, from_: From) -> None:
        self.from_ = from_


class _Idle:
    """The idle timer's message (``_AgentServer._idle``)."""

    __slots__ = ()


_IDLE = _Idle()
_MARK_TRIES = 5
"""Claims a process that has not claimed its session yet makes to record its stop (``_mark``)."""
_IDLE_EARLY = 0.001
"""An idle timer may fire this much before its due time (the loop's clock resolution)."""


async def claim(arg: SessionArg) -> int:
    """Make the calling process the session's next incarnation; returns it (the fence). The
    claim records the process's owner too (same statement)."""
    conv = await arg.system.store.conversations.open(
        arg.session,
        agent_name=arg.config.name,
        user_id=arg.user,
        claim=True,
        restart=arg.config.restart,
        owner_pid=encode_owner(arg.owner),
    )
    return conv.incarnation


async def load_history(arg: SessionArg) -> list[ModelMessage]:
    policy: MemoryPolicy = arg.config.memory
    msgs = await arg.system.store.conversations.history(arg.session, limit=policy.load_limit())
    return policy.apply(msgs) if policy.bounded else msgs


class AgentServer(Process):
    """One agent session (see the module documentation)."""

    __slots__ = ("_a", "_epoch", "_idle_due", "_memory", "_oref", "_queue", "_running", "_timer")
    hibernate_after = 1.0

    _a: SessionArg
    _memory: list[ModelMessage] | None
    _queue: deque[_Turn] | None
    _running: _Turn | None

    async def init(self, arg: SessionArg) -> None:
        self._a = arg
        self._memory = None
        self._queue = None
        self._running = None
        self._timer: Any = None
        self._idle_due = math.inf
        self._oref: Ref | None = None
        self.trap_exit = True  # so a shutdown from the supervisor runs terminate
        system = arg.system
        cfg = arg.config
        if system.is_stale(cfg):  # a (re)start always runs the newest known version
            cfg = arg.config = await system.current_config(cfg)
        # Every process hosting the session claims it (a new incarnation) before it loads any
        # history: a turn still running in a killed predecessor is fenced from then on. A new
        # session claims here, with the open it needs anyway; a restarted or revived one
        # claims in its first turn's task, just before that task loads the history, so a
        # restart never waits on the store.
        self._epoch: int | None = arg.epoch  # a failover start claimed it already
        arg.epoch = None  # a later restart of this process claims again
        if not arg.known:
            store = system.store
            try:
                conv = await store.conversations.open(
                    arg.session,
                    agent_name=cfg.name,
                    user_id=arg.user,
                    claim=True,
                    restart=cfg.restart,
                    owner_pid=encode_owner(arg.owner),
                )
            except SessionOwnedError as e:
                if arg.exclusive:  # the caller forwards to the owner instead (cluster)
                    raise
                # a live node owns it: start unclaimed; each turn claims first and fails with
                # SessionMovedError until the owner is gone
                log.info("agent_session_owned_elsewhere", session=arg.session, owner=e.node)
            else:
                self._epoch = conv.incarnation
                if conv.message_count == 0:  # new conversation: nothing to load on 1st turn
                    if cfg.initial_memory:
                        await store.conversations.append_turn(
                            arg.session, list(cfg.initial_memory), incarnation=self._epoch
                        )
                    self._memory = list(cfg.initial_memory)
            arg.known = True
        rt = self._rt
        rt.registry.update_meta(arg.session, self.pid, system.meta_for(cfg, arg.session, arg.user))
        if arg.owner is not None:
            lost = arg.owner_lost
            if lost is None:
                self._oref = self.monitor(arg.owner)  # noproc at once if it is gone
            else:  # gone with its node: the link fires at once, as the node's death did
                arg.owner_lost = None
                rt.send(self.pid, _OwnerLost(arg.owner, lost))
        restarted = arg.starts > 0
        arg.starts += 1
        rt.events.publish(
            topics.AGENT_RESTARTED if restarted else topics.AGENT_STARTED,
            agent=cfg.name,
            session=arg.session,
            user=arg.user,
            pid=repr(self.pid),
            restarts=arg.starts - 1,
        )
        if restarted:
            METRICS.restarts += 1
        self._arm_idle()

    # ----------------------------------------------------------------- state

    @property
    def load(self) -> int:
        """Turns queued plus running: read it without a round trip (``agent_load``)."""
        q = self._queue
        return (len(q) if q else 0) + (self._running is not None)

    @property
    def session(self) -> str:
        return self._a.session

    @property
    def config(self) -> AgentConfig:
        return self._a.config

    @property
    def memory_loaded(self) -> bool:
        return self._memory is not None

    # -------------------------------------------------------------- requests

    async def handle_call(self, request: Any, from_: From) -> Any:
        if type(request) is tuple:
            op = request[0]
            if op == "run":
                try:
                    return await self._submit(request, from_)
                except AgentError as e:  # refused: the caller gets it, the server goes on
                    self.reply_error(from_, e)
                    return NOREPLY
            if op == "attach_owner":
                return self._attach(request[1], from_)
        elif request == "status":
            return self._status()
        elif request == "history":
            return None if self._memory is None else list(self._memory)
        elif request == "cancel":
            return self._cancel()
        self.reply_error(from_, ValueError(f"unknown agent request {request!r}"))
        return NOREPLY

    async def _submit(self, request: tuple[Any, ...], from_: From) -> Any:
        message, parent, sink = request[1], request[2], request[3]
        ticket = request[4] if len(request) > 4 else None
        audit = request[5] if len(request) > 5 else ()
        req = request[6] if len(request) > 6 else None
        cfg = self._a.config
        schema = cfg._cache.get("input")
        prompt = (
            schema.prompt(cfg.name, message)
            if schema is not None
            else plain_prompt(cfg.name, message)
        )
        turn = _Turn(from_, prompt, parent, sink, ticket, audit, req)
        if self._running is None:
            await self._start_turn(turn)
        else:
            q = self._queue
            if q is None:
                q = self._queue = deque()
            if len(q) >= cfg.max_queue:
                METRICS.busy += 1
                raise AgentBusyError(self._a.session, len(q) + 1, cfg.max_queue)
            q.append(turn)
        return NOREPLY

    async def _start_turn(self, turn: _Turn) -> None:
        a = self._a
        cfg = a.config
        if a.system.is_stale(cfg) and cfg.version_policy == "next_turn":
            cfg = await self._switch(cfg)
        parent = turn.parent
        exec_id = new_id()  # time-ordered: lands at the right edge of the primary key
        self._running = turn
        # the idle timer is left pending: it finds a turn running (or a later due time) and
        # the turn's end moves the due time; no timer is cancelled and re-armed per turn
        memory = self._memory
        me = self.pid
        rt = self._rt
        system = a.system
        epoch = self._epoch
        ticket = turn.ticket
        if ticket is not None:
            ticket.execution_id = exec_id
            ticket.turn = turn

        async def work() -> None:
            turn.began = True
            loaded = None
            claimed = None
            history = memory
            c = turn.ctx
            assert c is not None
            outcome: Any
            METRICS.running += 1  # a gauge; the store commits a lone turn on the loop
            try:
                if epoch is None:  # first turn of this incarnation: claim, then load
                    claimed = await claim(a)
                    history = None
                if history is None:
                    loaded = history = await load_history(a)
                elif cfg.memory.bounded:
                    history = cfg.memory.apply(history)
                outcome = await execute_turn(
                    cfg,
                    system.store,
                    c,
                    turn.prompt,
                    history,
                    turn.sink,
                    parent,
                    epoch if claimed is None else claimed,
                    turn,
                    turn.audit,
                    turn.request,
                )
            except TurnError as e:
                outcome = e
            except (FencedError, SessionOwnedError) as e:  # not the owner at this epoch
                outcome = SessionMovedError(
                    cfg.name,
                    a.session,
                    current_epoch=e.current if isinstance(e, FencedError) else e.epoch,
                    owner=e.node if isinstance(e, SessionOwnedError) else None,
                    execution_id=exec_id,
                )
                if isinstance(e, SessionOwnedError):
                    outcome.owner_id = f"{e.node}#{e.incarnation}"
                outcome.__cause__ = e
                METRICS.fenced += 1
                log.warning("agent_turn_fenced", agent=cfg.name, session=a.session, error=str(e))
            except asyncio.CancelledError:  # killed: the server learns it from the task's exit
                if ticket is not None:
                    ticket.settle(_death_error(cfg, turn, "killed"))
                await wait_tools(c)
                raise
            except Exception as e:
                outcome = TurnError(
                    cfg.name,
                    f"{type(e).__name__}: {e}",
                    execution_id=exec_id,
                    reason=f"{type(e).__name__}: {redact_secrets(str(e))}",
                )
                outcome.__cause__ = e
            finally:
                METRICS.running -= 1
            if isinstance(outcome, TurnError):
                try:
                    why = f"{type(outcome).__name__}: {outcome.reason}"
                    await record_failure(system.store, cfg, c, "failed", why)
                except Exception as e:  # the caller still gets the turn's error
                    log.warning("agent_failure_not_recorded", session=a.session, error=repr(e))
            turn.reported = True
            if ticket is not None:
                ticket.settle(outcome)
            rt.send(me, _TurnDone(turn, outcome, loaded, claimed))

        handle = await rt.tasks.start(work, timeout=cfg.turn_timeout)
        turn.handle = turn.handle_ref = handle
        turn.ctx = TurnContext(
            cfg.name,
            a.session,
            a.user,
            exec_id,
            parent.execution_id if parent is not None else None,
            (*parent.chain, cfg.name) if parent is not None else (cfg.name,),
            handle.pid,
            time.monotonic(),
            {},
            turn.request[0] if turn.request is not None else None,
            _RowState(parent),
        )

        # Instead of a monitor (a ref, two tables, a Down to handle after every turn): the
        # task's exit future tells the server only when the task died before reporting.
        def exited(reason: ExitReason) -> None:
            if not turn.reported:
                if ticket is not None:  # the server may be gone: its caller reads this
                    ticket.settle(_death_error(cfg, turn, reason))
                if turn.handle is not None:
                    rt.send(me, _TaskDown(turn, reason))

        handle.on_exit(exited)
        turn.span = tracer.start_span(
            "agent.turn", attributes={"agent": cfg.name, "session": a.session, "execution": exec_id}
        )
        METRICS.started += 1
        rt.events.publish(
            topics.TURN_STARTED, agent=cfg.name, session=a.session, user=a.user, execution=exec_id
        )

    async def _switch(self, cfg: AgentConfig) -> AgentConfig:
        """Move to the newest known version of the definition (policy ``next_turn``)."""
        a = self._a
        new = await a.system.current_config(cfg)
        if new is cfg:
            return cfg
        a.config = new
        self._rt.registry.update_meta(
            a.session, self.pid, a.system.meta_for(new, a.session, a.user)
        )
        log.info(
            "agent_version_switched",
            agent=new.name,
            session=a.session,
            from_version=cfg.version,
            to_version=new.version,
        )
        return new

    def _status(self) -> dict[str, Any]:
        a = self._a
        r = self._running
        return {
            "agent": a.config.name,
            "session": a.session,
            "user": a.user,
            "version": a.config.version,
            "state": "running" if r else ("idle" if self._memory is not None else "hibernated"),
            "queued": len(self._queue) if self._queue else 0,
            "load": self.load,
            "execution": r.ctx.execution_id if r is not None and r.ctx is not None else None,
            "owner": repr(a.owner) if a.owner is not None else None,
            "messages": len(self._memory) if self._memory is not None else None,
            "restarts": a.starts - 1,
        }

    def _cancel(self) -> bool:
        r = self._running
        if r is None or r.handle is None or r.committing:
            return False
        r.cancelled = True
        r.handle.cancel()
        return True

    def _attach(self, owner: Pid, from_: From | None = None) -> Any:
        """Monitor ``owner`` instead of any other. In a cluster the caller is answered once
        the new owner is stored (so an acknowledged attach survives a failover); the server
        serves other messages meanwhile."""
        a = self._a
        if self._oref is not None:
            self.demonitor(self._oref)
        changed = a.owner != owner
        a.owner = owner
        self._oref = self.monitor(owner)
        if changed and self._store_owner(from_):
            return NOREPLY
        return True

    def _store_owner(self, from_: From | None = None) -> bool:
        """Record the session's owner in the store, in the background (a successor that takes
        the session over monitors it again): at this process's epoch, or, before its first
        claim, while this node holds the session (the claim records it anyway); then answer
        ``from_``, if given, with ``True``. Only a cluster pid is stored (``encode_owner``);
        a single node stores nothing (``False``: nothing started, nobody to answer)."""
        a = self._a
        text = encode_owner(a.owner)
        if text is None and not is_cluster_node(self._rt.node):
            return False  # a single node: nothing stored
        store = a.system.store
        epoch = self._epoch
        rt = self._rt
        me = self.pid

        async def write() -> None:
            try:
                await store.conversations.set_owner_pid(a.session, text, incarnation=epoch)
            except Exception as e:  # attached all the same; a takeover will not know it
                log.warning("agent_owner_not_recorded", session=a.session, error=repr(e))
            if from_ is not None:
                rt.send(me, _OwnerStored(from_))

        a.system.background(write())
        return True

    # ------------------------------------------------------------------ info

    async def handle_info(self, message: Any) -> None:
        t = type(message)
        if t is _TurnDone:
            if message.claimed is not None:
                self._epoch = message.claimed
            await self._finish(message.turn, message.outcome, message.loaded)
        elif t is _TaskDown:
            await self._task_down(message.turn, message.reason)
        elif t is Down:
            if message.ref == self._oref and self._oref is not None:
                self._owner_exited(message.reason)
        elif t is _Idle:
            self._idle()
        elif t is _OwnerStored:
            self._answer(message.from_, True, None)
        elif t is _OwnerLost:
            if self._a.owner == message.owner and self._oref is None:  # not replaced since
                self._owner_exited(message.reason)
        elif t is Exit:
            if not _normal(message.reason):  # a process linked by user code crashed
                self.stop(message.reason)
        else:
            log.warning(
                "agent_unexpected_message", session=self._a.session, message=repr(message)[:200]
            )

    async def _task_down(self, r: _Turn, reason: Any) -> None:
        """The turn's task died before reporting: its caller gets the matching ``TurnError``
        and a ``failed``/``cancelled`` execution row is recorded in the background."""
        if self._running is not r or r.handle is None:
            return
        err = _death_error(self._a.config, r, reason)
        self._record_async(r, "cancelled" if r.cancelled else "failed", str(err))
        await self._finish(r, err, None)

    def _record_async(self, turn: _Turn, status: str, error: str) -> None:
        a = self._a
        ctx = turn.ctx
        if ctx is None:
            return
        store = a.system.store

        async def rec() -> None:
            try:
                await record_failure(store, a.config, ctx, status, error)
            except Exception as e:
                log.warning("agent_failure_not_recorded", session=a.session, error=repr(e))

        a.system.background(rec())

    async def _finish(self, turn: _Turn, outcome: Any, loaded: list[ModelMessage] | None) -> None:
        if self._running is not turn:
            return
        self._running = None
        turn.handle = None
        a = self._a
        cfg = a.config
        if loaded is not None and self._memory is None:
            self._memory = loaded
        if isinstance(outcome, SessionMovedError):
            # not the owner at this epoch any more: the next turn claims again (and fails
            # alike while a live node owns the session) and reloads the memory it may lack
            self._epoch = None
            self._memory = None
        ctx = turn.ctx
        eid = ctx.execution_id if ctx is not None else None
        if isinstance(outcome, TurnResult):
            mem = self._memory
            if mem is None:
                mem = self._memory = []
            mem.extend(outcome.messages)
            if cfg.memory.bounded:  # the turns no later window shows go (see _memory)
                self._memory = cfg.memory.trim(mem)
            METRICS.succeeded += 1
            METRICS.tokens_in += outcome.tokens_in
            METRICS.tokens_out += outcome.tokens_out
            METRICS.seconds += outcome.duration_ms / 1000.0
            self._rt.events.publish(
                topics.TURN_FINISHED,
                agent=cfg.name,
                session=a.session,
                user=a.user,
                execution=eid,
                status="succeeded",
                duration=outcome.duration_ms / 1000.0,
                tokens_in=outcome.tokens_in,
                tokens_out=outcome.tokens_out,
                error=None,
                reason=None,
            )
            self._answer(turn.from_, outcome, None)
        else:
            err: TurnError = outcome
            status = "cancelled" if isinstance(err, TurnCancelledError) else "failed"
            if isinstance(err, TurnTimeoutError):
                METRICS.timeouts += 1
            elif status == "cancelled":
                METRICS.cancelled += 1
            else:
                METRICS.failed += 1
            log.info(
                "agent_turn_failed",
                session=a.session,
                execution=eid,
                error=type(err).__name__,
                reason=err.reason,
            )
            self._rt.events.publish(
                topics.TURN_FINISHED,
                agent=cfg.name,
                session=a.session,
                user=a.user,
                execution=eid,
                status=status,
                duration=None,
                tokens_in=0,
                tokens_out=0,
                error=type(err).__name__,
                reason=err.reason,
            )
            self._answer(turn.from_, None, err)
        if turn.span is not None:
            turn.span.end()
        q = self._queue
        if q:
            nxt = q.popleft()
            if not q:
                self._queue = None
            await self._start_turn(nxt)
        elif a.exclusive and isinstance(outcome, SessionMovedError) and outcome.owner_id:
            # started by a cluster's get-or-start, and a live node owns the session now:
            # step aside, so requests are forwarded to that owner
            log.info("agent_session_stepped_aside", session=a.session, owner=outcome.owner_id)
            self.stop("normal")
        else:
            self._arm_idle()

    def _answer(self, from_: From, value: Any, error: BaseException | None) -> None:
        if error is None:
            self.reply(from_, value)
        else:
            self.reply_error(from_, error)
        ext = self._ext  # the kernel keeps deferred calls to fail them on exit; forget this one
        if ext is not None and ext.deferred:
            ext.deferred.discard(from_)
            if not ext.deferred:
                ext.deferred = None

    # ------------------------------------------------------ owners and idling

    def _owner_exited(self, reason: ExitReason) -> None:
        a = self._a
        had = encode_owner(a.owner)
        a.owner = None
        self._oref = None
        METRICS.owner_exits += 1
        if a.config.owner_policy == "stop":
            log.info("agent_owner_exited", session=a.session, reason=repr(reason), action="stop")
            self._mark("stopped", clear_owner=True)  # not restarted when its node dies
            self.stop(SHUTDOWN)
            return
        log.info("agent_owner_exited", session=a.session, reason=repr(reason), action="hibernate")
        if had is not None:
            self._store_owner()  # no owner any more: a successor monitors none
        if self._running is None:
            self._drop_memory()

    def _arm_idle(self) -> None:
        cfg = self._a.config
        delay = cfg.idle_hibernate if self._memory is not None else None
        if delay is None:
            delay = cfg.idle_evict
        if delay is None:
            self._idle_due = math.inf
            return
        due = self._rt._loop.time() + delay
        self._idle_due = due
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return  # it fires first, then waits for the rest (``_idle``)
            timer.cancel()
        self._timer = self.send_after(delay, _IDLE)

    def _drop_memory(self) -> None:
        if self._memory is None:
            return
        self._memory = None
        a = self._a
        METRICS.hibernations += 1
        self._rt.events.publish(topics.AGENT_HIBERNATED, agent=a.config.name, session=a.session)
        self.hibernate()

    def _idle(self) -> None:
        self._timer = None
        if self._running is not None or self._queue:
            return  # the turn's end arms the timer again
        left = self._idle_due - self._rt._loop.time()
        if left > _IDLE_EARLY:  # activity since it was armed: wait for the rest
            if left != math.inf:
                self._timer = self.send_after(left, _IDLE)
            return
        a = self._a
        cfg = a.config
        if self._memory is not None and cfg.idle_hibernate is not None:
            self._drop_memory()
            ev = cfg.idle_evict
            if ev is not None and a.owner is None and cfg.restart != "permanent":
                delay = max(ev - cfg.idle_hibernate, 0.0)
                self._idle_due = self._rt._loop.time() + delay
                self._timer = self.send_after(delay, _IDLE)
            return
        if cfg.idle_evict is not None and a.owner is None and cfg.restart != "permanent":
            self._memory = None
            self._mark("evicted")  # revived lazily by the next call, on any node
            a.system._evict(a.config, a.session)
            METRICS.evictions += 1
            self._rt.events.publish(topics.AGENT_EVICTED, agent=cfg.name, session=a.session)
            self.stop("normal")

    def _mark(self, state: str, *, clear_owner: bool = False) -> None:
        """Record the session's host state in the store, in the background, while this
        process's claim is current (a successor's claim wins). ``clear_owner`` (stopped with
        its owner): the owner is cleared too, and a process that has not claimed the session
        yet (restarted or revived, no turn since) claims it first, so that the stop is
        recorded; when a live node owns it instead, that node's process has the say."""
        a = self._a
        epoch = self._epoch
        if epoch is None and not clear_owner:
            return  # not the owner of record: nothing to say
        store = a.system.store

        async def mark() -> None:
            try:
                if epoch is not None:
                    await store.conversations.set_host_state(
                        a.session, state, incarnation=epoch, clear_owner=clear_owner
                    )
                    return
                # claimed here: the only other claim of this node that can land after it is
                # the first turn's of this very process (its task was started before the
                # stop and may be claiming still), so claim again until the mark holds
                for _ in range(_MARK_TRIES):
                    at = await claim(a)
                    if await store.conversations.set_host_state(
                        a.session, state, incarnation=at, clear_owner=clear_owner
                    ):
                        return
            except SessionOwnedError as e:  # that node's process applies its owner's exit
                log.debug("agent_host_state_left_to_owner", session=a.session, owner=e.node)
            except Exception as e:
                log.warning("agent_host_state_not_recorded", session=a.session, error=repr(e))

        a.system.background(mark())

    def terminate(self, reason: ExitReason) -> None:
        a = self._a
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        r = self._running
        if r is not None and r.handle is not None and not r.committing:
            r.cancelled = True
            r.handle.cancel()
        cfg = a.config
        if _normal(reason):
            topic = topics.AGENT_STOPPED
        else:
            topic = topics.AGENT_CRASHED
            METRICS.crashes += 1
        self._rt.events.publish(
            topic, agent=cfg.name, session=a.session, pid=repr(self.pid), reason=repr(reason)[:200]
        )


def _death_error(cfg: AgentConfig, turn: _Turn, reason: Any) -> TurnError:
    """The error of a turn whose task died before reporting."""
    eid = turn.ctx.execution_id if turn.ctx else None
    if turn.cancelled:
        return TurnCancelledError(cfg.name, execution_id=eid)
    if reason == "timeout":
        return TurnTimeoutError(cfg.name, cfg.turn_timeout, execution_id=eid)
    return TurnCancelledError(cfg.name, reason=f"stopped: {reason!r}", execution_id=eid)


def agent_load(rt: Any, target: Any) -> int:
    """Turns queued plus running on the agent ``target`` (a local pid or name), read without a
    round trip; ``0`` when it is not a running agent."""
    p = rt.process(target)
    return p.load if isinstance(p, AgentServer) else 0
