"""A supervisor of node OS processes (``netsuke serve --nodes N``), in the OTP sense.

* **Start**: children start one after the other, in order; each must say it serves (its
  ``node 'NAME#INCARNATION' running at`` line) before the next starts, as ``start_link``
  waits for ``init``. A child that exits (or stays silent for ``start_timeout``) while
  starting fails the start: the ones already started are stopped (:class:`ChildStartError`).
* **Restart** (``one_for_one``, ``permanent``): a child that exits while the supervisor runs
  is started again at once (a new incarnation), unless that makes more than
  ``max_restarts`` restarts within ``period`` seconds (the restart intensity): then every
  child is stopped and :meth:`NodeSupervisor.run` raises :class:`RestartIntensityError`.
* **Stop**: in reverse start order, one at a time: SIGTERM, wait up to ``stop_timeout``
  (the child drains: requests in flight are answered), then SIGKILL (``brutal_kill``). With
  ``force``, each child gets SIGTERM twice (its drain ends at once; its ordered shutdown
  still runs).

Children run in their own process group (a Ctrl-C on the terminal reaches only the
supervisor, which stops them in order) and get SIGTERM if the supervisor dies
(``PR_SET_PDEATHSIG``). Their standard output is relayed line by line; their standard error
is the supervisor's. Logs: ``serve_node_started``, ``serve_node_exited``,
``serve_node_restarting``, ``serve_node_stopping``, ``serve_restart_intensity_exceeded``
(each with ``node`` and ``pid``). Each child gets ``NETSUKE_NODE_RESTARTS``: how often its
name was restarted before (a node shows it as the gauge ``netsuke_serve_node_restarts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from ._embedded_nats import parent_death_signal

__all__ = [
    "ChildSpec",
    "ChildStartError",
    "NodeChild",
    "NodeSupervisor",
    "RestartIntensityError",
]

log = structlog.get_logger("netsuke.cluster")

_RUNNING = re.compile(r"node '([^'#]+)#(\d+)' running at")


class ChildStartError(RuntimeError):
    """A child did not start: it exited (``code``) or did not say it serves in time."""

    def __init__(self, name: str, code: int | None, why: str) -> None:
        super().__init__(f"node {name!r} did not start: {why}")
        self.name = name
        self.code = code


class RestartIntensityError(RuntimeError):
    """More than ``max_restarts`` restarts within ``period`` seconds."""

    def __init__(self, name: str, code: int | None, max_restarts: int, period: float) -> None:
        super().__init__(
            f"node {name!r} exited ({_describe(code)}); more than {max_restarts} restarts "
            f"within {period:g} s (restart intensity): every node stopped"
        )
        self.name = name
        self.code = code


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child: its node name, command line, environment, inherited fds."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


@dataclass(slots=True)
class NodeChild:
    """One running incarnation of a child."""

    spec: ChildSpec
    proc: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    incarnation: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class NodeSupervisor:
    """Start, watch, restart and stop the children of ``specs`` (see the module docs).

    ``on_exit(child)`` runs after a child exited unexpectedly, before its restart (``netsuke
    serve`` ends the dead incarnation's lease there); ``echo`` receives each line a child
    writes to its standard output."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        max_restarts: int = 3,
        period: float = 5.0,
        start_timeout: float = 120.0,
        stop_timeout: float = 75.0,
        on_exit: Callable[[NodeChild], Awaitable[None]] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.max_restarts = max_restarts
        self.period = period
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.on_exit = on_exit
        self.echo = echo or _print
        self.children: dict[str, NodeChild] = {}
        self.restarts: deque[float] = deque()
        self.restart_count = 0
        self.restarts_by_name: Counter[str] = Counter()

    # ------------------------------------------------------------------ start

    async def _spawn(self, spec: ChildSpec) -> NodeChild:
        restarts = self.restarts_by_name[spec.name]
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env={**spec.env, "NETSUKE_NODE_RESTARTS": str(restarts)},
            pass_fds=spec.pass_fds,
            process_group=0,
            preexec_fn=parent_death_signal(),
        )
        child = NodeChild(spec, proc)
        child.relay = asyncio.create_task(self._relay(child), name=f"relay-{spec.name}")
        self.children[spec.name] = child
        return child

    async def _relay(self, child: NodeChild) -> None:
        """Relay the child's output; note its incarnation once it says it serves."""
        stream = child.proc.stdout
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if not child.ready.is_set() and (m := _RUNNING.search(text)):
                child.incarnation = int(m.group(2))
                child.ready.set()
                log.info(
                    "serve_node_started",
                    node=child.spec.name,
                    pid=child.pid,
                    incarnation=child.incarnation,
                )
            self.echo(text)

    async def _await_ready(self, child: NodeChild, stop: asyncio.Event) -> bool:
        """Wait until ``child`` serves (True), or ``stop`` is set (False); ChildStartError
        when it exits first or takes longer than ``start_timeout``."""
        ready = asyncio.ensure_future(child.ready.wait())
        exited = asyncio.ensure_future(child.proc.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {ready, exited, stopped},
                timeout=self.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for f in (ready, exited, stopped):
                f.cancel()
        if child.ready.is_set():
            return True
        if stop.is_set():
            return False
        if child.proc.returncode is not None:
            raise ChildStartError(
                child.spec.name, child.proc.returncode, _describe(child.proc.returncode)
            )
        raise ChildStartError(child.spec.name, None, f"not serving after {self.start_timeout:g} s")

    async def start(self, stop: asyncio.Event) -> bool:
        """Start every child in order, each once the previous one serves. False when
        ``stop`` was set meanwhile; ChildStartError (after stopping the started ones) when
        one failed."""
        try:
            for spec in self.specs:
                child = await self._spawn(spec)
                if not await self._await_ready(child, stop):
                    return False
        except ChildStartError:
            await self.shutdown()
            raise
        return True

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the children until ``stop`` is set (then return, children still running:
        call :meth:`shutdown`), restarting those that exit. RestartIntensityError (after
        stopping every child) when they exit too often."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waits = {asyncio.ensure_future(c.proc.wait()): c for c in self.children.values()}
                try:
                    done, _ = await asyncio.wait(
                        {stopped, *waits}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waits:
                        w.cancel()
                if stop.is_set():
                    return
                for w, child in waits.items():
                    if w in done:
                        await self._exited(child)
        finally:
            stopped.cancel()

    async def _exited(self, child: NodeChild) -> None:
        code = child.proc.returncode
        log.warning(
            "serve_node_exited",
            node=child.spec.name,
            pid=child.pid,
            incarnation=child.incarnation,
            code=code,
            how=_describe(code),
        )
        await _end_relay(child)
        if self.on_exit is not None:
            try:
                await self.on_exit(child)
            except Exception as e:  # the restart still goes on (the lease runs out itself)
                log.warning("serve_node_exit_hook_failed", node=child.spec.name, error=f"{e}"[:300])
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - self.period:
            self.restarts.popleft()
        if len(self.restarts) > self.max_restarts:
            log.error(
                "serve_restart_intensity_exceeded",
                node=child.spec.name,
                pid=child.pid,
                restarts=len(self.restarts) - 1,
                period=self.period,
            )
            del self.children[child.spec.name]
            await self.shutdown()
            raise RestartIntensityError(child.spec.name, code, self.max_restarts, self.period)
        self.restart_count += 1
        self.restarts_by_name[child.spec.name] += 1
        new = await self._spawn(child.spec)
        log.warning(
            "serve_node_restarting",
            node=child.spec.name,
            pid=new.pid,
            previous_pid=child.pid,
            restarts=self.restart_count,
        )

    # ------------------------------------------------------------------ stop

    async def shutdown(self, *, force: asyncio.Event | None = None) -> None:
        """Stop the children in reverse start order, one at a time (see the module docs)."""
        order = [self.children[s.name] for s in reversed(self.specs) if s.name in self.children]
        for child in order:
            await self._stop_child(child, force)
        self.children.clear()

    async def _stop_child(self, child: NodeChild, force: asyncio.Event | None) -> None:
        proc = child.proc
        if proc.returncode is None:
            log.info("serve_node_stopping", node=child.spec.name, pid=child.pid)
            _signal(proc.pid, signal.SIGTERM)
            forced = False
            deadline = time.monotonic() + self.stop_timeout
            while proc.returncode is None:
                if force is not None and force.is_set() and not forced:
                    forced = True
                    _signal(proc.pid, signal.SIGTERM)  # the second signal: stop draining
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("serve_node_killed", node=child.spec.name, pid=child.pid)
                    _signal(proc.pid, signal.SIGKILL)
                    await proc.wait()
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), min(left, 0.2))
                except TimeoutError:
                    continue
            log.info(
                "serve_node_exited",
                node=child.spec.name,
                pid=child.pid,
                code=proc.returncode,
                how=_describe(proc.returncode),
                stopped=True,
            )
        await _end_relay(child)


async def _end_relay(child: NodeChild, grace: float = 1.0) -> None:
    """Let the relay pass on the dead child's last lines; stop it after ``grace`` seconds (a
    process the child started may still hold its standard output open)."""
    relay = child.relay
    if relay is None:
        return
    await asyncio.wait({relay}, timeout=grace)
    if not relay.done():
        relay.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await relay


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited meanwhile (not reaped yet: still ours)
        pass


def _print(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # nobody reads our output any more: the nodes go on
        pass
