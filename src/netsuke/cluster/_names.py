"""Global names: a name registered cluster-wide, unique, owned by one process of one node.

The store holds the names (``cluster_names``, primary key the name) and decides every
registration in one transaction, judged by the database clock:

* a free name is inserted (of concurrent inserts the primary key lets exactly one win);
* a name whose owner node still holds a live lease cannot be taken (``AlreadyStartedError``
  with the holder's pid);
* a name whose owner node's lease has run out (or that left, or fenced itself) is taken over
  atomically (compare-and-set on the old owner);
* the owner process's exit unregisters the name; a restarted node does not keep its
  predecessor's names (they are deleted when it joins).

Resolution: ``whereis``/``lookup``/``match`` read the store: a name resolves only while its
owner node's lease is live. A fenced node drops its names' ownership locally at once (``owns``
is ``False``, ``whereis`` of its own names gives ``None``, ``register`` raises
``FencedError``).

The names cache: each node keeps name -> pid for the global names it has seen (all live names
are read once when the node joins), so that ``rt.call("name")``, ``send``, ``cast`` and the
messaging methods here cost no store round trip. It is invalidated over NATS: a registration,
a takeover, an unregistration or an owner's exit publishes the name (``<prefix>.names``), a
fenced node publishes all of its names, and a node this node finds down drops its names
locally; each node drops them, and reads the names published again from the store in the
background (those of a node that is down or fenced are read when next used). A miss
reads the store (``call``), or answers "not registered" at once and reads it in the
background (``send``, ``cast``, ``whereis`` of the kernel, which never wait). GlobalNames is
the runtime's ``name_fallback``: a ``str`` name not registered on the node is looked up here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Final

import structlog
from opentelemetry import trace
from prometheus_client import Counter
from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from netsuke.kernel import AlreadyStartedError, NoProcessError, Pid, Process, Runtime
from netsuke.observability import REGISTRY

from ._codec import from_wire, to_wire
from ._membership import LIVE, NAMES, NODES, FencedError, Membership, db_now
from ._nats import NatsTransport

__all__ = ["GlobalEntry", "GlobalNames"]

log = structlog.get_logger("netsuke.cluster")
tracer = trace.get_tracer("netsuke.cluster")

REGISTRATIONS = Counter(
    "netsuke_cluster_name_registrations",
    "Global name registrations by outcome (registered, taken_over, refused).",
    ["node", "outcome"],
    registry=REGISTRY,
)

NAME_CACHE = Counter(
    "netsuke_cluster_name_cache",
    "Resolutions of global names by the node's names cache: hit (the owner, or known to be"
    " absent, without I/O) or miss (not known here: read from the store).",
    ["node", "result"],
    registry=REGISTRY,
)
NAME_INVALIDATIONS = Counter(
    "netsuke_cluster_name_invalidations",
    "Invalidations of the names cache: published (by this node), received (from another"
    " node), node_down (the names of a node found down).",
    ["node", "source"],
    registry=REGISTRY,
)

_MAX_NAME = 255
_MISSING: Final[Any] = object()
_MAX_CACHED = 500_000  # entries; beyond, the cache starts again empty (misses read the store)
_REFRESH_BATCH = 500


@dataclass(frozen=True, slots=True)
class GlobalEntry:
    """A global name, the pid that owns it and its metadata."""

    name: str
    pid: Pid
    meta: Any


def _check_name(name: object) -> str:
    if type(name) is not str or not 1 <= len(name) <= _MAX_NAME:
        raise ValueError(f"a global name is a str of 1-{_MAX_NAME} characters, not {name!r}")
    return name


class GlobalNames:
    """Global names of the cluster, seen from this node (``membership`` and ``runtime`` are
    this node's). Every method but ``owns`` reads or writes the store."""

    def __init__(self, membership: Membership, runtime: Runtime) -> None:
        if runtime.node != membership.node_id:
            raise ValueError(f"the runtime's node must be {membership.node_id!r}")
        self.membership = membership
        self.rt = runtime
        self.db = membership.db
        self._owned: dict[str, Pid] = {}
        self.owned_at_fence: list[str] = []
        """The names this node owned when it fenced itself (dropped then)."""
        self._watchers: dict[str, asyncio.Future[Any]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        membership.on_fenced(self._on_fenced)
        # the names cache (see the module documentation): name -> owner pid, None: absent
        self._cache: dict[str, Pid | None] = {}
        self._epoch = 0  # bumped by every invalidation: a store read older than it is not kept
        self._to_refresh: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        node = membership.node_id
        self._hit = NAME_CACHE.labels(node, "hit")
        self._miss = NAME_CACHE.labels(node, "miss")
        t = runtime.transport
        self.transport = t if isinstance(t, NatsTransport) else None
        if self.transport is not None:
            self.transport.names_listeners.append(self._on_invalidation)
            self.transport.down_listeners.append(self._on_node_down)
        if runtime.name_fallback is None:
            runtime.name_fallback = self
        self._warmer: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._warm()
        )

    # ------------------------------------------------------------------ ownership

    def owns(self, name: str) -> bool:
        """Whether this node owns ``name`` now (never once it is fenced)."""
        return name in self._owned and not self.membership.fenced

    def owned(self) -> list[str]:
        """The names this node owns now (none once it is fenced)."""
        return [] if self.membership.fenced else sorted(self._owned)

    def _on_fenced(self, reason: str) -> None:
        self.owned_at_fence = sorted(self._owned)
        dropped = len(self._owned)
        self._owned.clear()
        self._invalidate_node(self.membership.node_id)
        self._publish(None, self.membership.node_id)
        for t in self._watchers.values():
            t.cancel()
        self._watchers.clear()
        log.error(
            "cluster_names_dropped", node=self.membership.node_id, names=dropped, reason=reason
        )

    # ------------------------------------------------------------------ registration

    async def register(self, name: str, pid: Pid, meta: Any = None) -> None:
        """Register ``name`` for ``pid`` (a live process of this node) cluster-wide.

        Raises ``AlreadyStartedError`` (with the holder's pid) when a live node owns it,
        ``FencedError`` when this node is fenced, ``NoProcessError`` when ``pid`` is not a
        live local process, ``ValueError`` for a bad name, ``EncodeError`` for metadata the
        wire codec cannot carry."""
        _check_name(name)
        m = self.membership
        m.check()
        if pid.node != self.rt.node or not self.rt.alive(pid):
            raise NoProcessError(pid)
        stored_meta = {"v": to_wire(meta)}
        assert m.incarnation is not None
        for _ in range(3):  # refused, but the holder's lease ran out meanwhile: try again
            try:
                outcome = await self._claim(name, pid, stored_meta)
            except IntegrityError:
                outcome = None
            if outcome is not None:
                break
            holder = await self.whereis(name)
            if holder is not None:
                REGISTRATIONS.labels(m.node_id, "refused").inc()
                raise AlreadyStartedError(name, holder)
        else:
            REGISTRATIONS.labels(m.node_id, "refused").inc()
            raise AlreadyStartedError(name, None)
        if m.fenced or not self.rt.alive(pid):  # fenced, or the process died meanwhile
            with contextlib.suppress(Exception):  # else the lease's end frees the name
                await self._release(name, pid)
            m.check()
            raise NoProcessError(pid)
        REGISTRATIONS.labels(m.node_id, outcome).inc()
        self._owned[name] = pid
        self._set(name, pid)
        self._publish([name])
        old = self._watchers.pop(name, None)
        if old is not None:
            old.cancel()
        proc = self.rt.process(pid)
        assert proc is not None  # alive just above, and nothing awaited since
        # No task per name: a callback on the process's exit (the kernel's exit future).
        fut = self.rt._exit_future(proc)
        fut.add_done_callback(lambda f: self._exited(f, name, pid))
        self._watchers[name] = fut
        log.info("cluster_name_registered", node=m.node_id, name=name, pid=repr(pid), how=outcome)

    async def _claim(self, name: str, pid: Pid, meta: dict[str, Any]) -> str | None:
        m = self.membership
        inc = m.incarnation
        async with self.db.write() as conn:
            now = db_now(conn)
            mine = (
                await conn.execute(
                    select(NODES.c.name).where(
                        NODES.c.name == m.name,
                        NODES.c.incarnation == inc,
                        NODES.c.state == LIVE,
                        NODES.c.expires_at > now,
                    )
                )
            ).first()
            if mine is None:
                m._fence("lease_lost")
                raise FencedError(m.node_id, "lease_lost")
            row = (
                await conn.execute(
                    select(NAMES.c.node_name, NAMES.c.incarnation, NAMES.c.pid_id).where(
                        NAMES.c.name == name
                    )
                )
            ).first()
            values = {
                "node_name": m.name,
                "incarnation": inc,
                "pid_id": pid.id,
                "meta": meta,
                "registered_at": now,
            }
            if row is None:
                await conn.execute(insert(NAMES).values(name=name, **values))
                return "registered"
            owner, owner_inc, owner_pid = row
            same_node_dead = (
                owner == m.name
                and owner_inc == inc
                and not self.rt.alive(Pid(m.node_id, int(owner_pid)))
            )
            if not same_node_dead and await _owner_live(conn, owner, owner_inc):
                return None
            done = await conn.execute(
                update(NAMES)
                .where(
                    NAMES.c.name == name,
                    NAMES.c.node_name == owner,
                    NAMES.c.incarnation == owner_inc,
                    NAMES.c.pid_id == owner_pid,
                )
                .values(**values)
            )
            if done.rowcount != 1:
                return None
            log.info(
                "cluster_name_taken_over",
                node=m.node_id,
                name=name,
                previous=f"{owner}#{owner_inc}",
            )
            return "taken_over"

    def _exited(self, fut: asyncio.Future[Any], name: str, pid: Pid) -> None:
        """The owner of ``name`` exited: unregister it (unless unwatched meanwhile)."""
        if fut.cancelled() or self._watchers.get(name) is not fut:
            return
        del self._watchers[name]
        if self._owned.get(name) == pid:
            del self._owned[name]
        t = asyncio.get_running_loop().create_task(self._release_retrying(name, pid))
        self._releasing.add(t)
        t.add_done_callback(self._releasing.discard)

    async def _release_retrying(self, name: str, pid: Pid) -> None:
        """Delete the row of ``name`` owned by ``pid``, retried while the store fails (until
        this node fences: its lease ends anyway, and the name with it)."""
        delay = 0.2
        while True:
            try:
                await self._release(name, pid)
                return
            except Exception as e:
                log.warning(
                    "cluster_name_release_failed", node=self.rt.node, name=name, error=repr(e)
                )
                if self.membership.fence_reason is not None:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _release(self, name: str, pid: Pid) -> bool:
        m = self.membership
        async with self.db.write() as conn:
            done = await conn.execute(
                NAMES.delete().where(
                    NAMES.c.name == name,
                    NAMES.c.node_name == m.name,
                    NAMES.c.incarnation == m.incarnation,
                    NAMES.c.pid_id == pid.id,
                )
            )
        if done.rowcount:
            self._set(name, None)
            self._publish([name])
        return bool(done.rowcount)

    async def unregister(self, name: str) -> bool:
        """Give up ``name`` if this node owns it; ``True`` when it was removed."""
        pid = self._owned.pop(name, None)
        if pid is None:
            return False
        t = self._watchers.pop(name, None)
        if t is not None:
            t.cancel()
        return await self._release(name, pid)

    # ------------------------------------------------------------------ resolution

    async def lookup(self, name: str) -> GlobalEntry | None:
        """The owner and metadata of ``name`` while its node's lease is live, else ``None``
        (read from the store; the answer refreshes the names cache). A fenced node does not
        resolve its own names."""
        _check_name(name)
        epoch = self._epoch
        entries = await self._entries(NAMES.c.name == name)
        e = entries[0] if entries else None
        self._fill(name, e.pid if e is not None else None, epoch)
        return e

    async def whereis(self, name: str) -> Pid | None:
        e = await self.lookup(name)
        return e.pid if e is not None else None

    async def _entries(self, *where: Any) -> list[GlobalEntry]:
        m = self.membership
        fenced = m.fenced
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        NAMES.c.name,
                        NAMES.c.node_name,
                        NAMES.c.incarnation,
                        NAMES.c.pid_id,
                        NAMES.c.meta,
                    )
                    .join(
                        NODES,
                        and_(
                            NODES.c.name == NAMES.c.node_name,
                            NODES.c.incarnation == NAMES.c.incarnation,
                        ),
                    )
                    .where(NODES.c.state == LIVE, NODES.c.expires_at > db_now(conn), *where)
                    .order_by(NAMES.c.name)
                )
            ).all()
        out = []
        for name, node, inc, pid_id, meta in rows:
            if fenced and node == m.name and inc == m.incarnation:
                continue
            out.append(GlobalEntry(name, Pid(f"{node}#{inc}", int(pid_id)), _meta(meta)))
        return out

    async def match(
        self, pattern: str | None = None, *, prefix: str | None = None, contains: str | None = None
    ) -> list[GlobalEntry]:
        """Live global names matching the glob ``pattern``, ``prefix`` and ``contains`` (each
        when given), by name (the local ``Registry.match`` filters, cluster-wide)."""
        for label, v in (("pattern", pattern), ("prefix", prefix), ("contains", contains)):
            if v is not None and type(v) is not str:
                raise ValueError(f"{label} must be a str, not {v!r}")
        where = []
        if prefix is not None:
            where.append(NAMES.c.name.startswith(prefix, autoescape=True))
        if contains is not None:
            where.append(NAMES.c.name.contains(contains, autoescape=True))
        entries = await self._entries(*where)
        if pattern is not None:
            rx = re.compile(fnmatch.translate(pattern))
            entries = [e for e in entries if rx.match(e.name)]
        return entries

    async def count(
        self, pattern: str | None = None, *, prefix: str | None = None, contains: str | None = None
    ) -> int:
        return len(await self.match(pattern, prefix=prefix, contains=contains))

    async def find(self, pattern: str) -> list[GlobalEntry]:
        """Names that contain ``pattern``, or match it when it has glob characters ``*?[``
        (seed 001's ``find_agents``)."""
        if any(c in pattern for c in "*?["):
            return await self.match(pattern)
        return await self.match(contains=pattern)

    async def stop_matching(self, pattern: str, reason: Any = "shutdown") -> int:
        """Stop every process ``find(pattern)`` returns, on whichever node; returns how many
        stopped."""
        found = await self.find(pattern)
        done = await asyncio.gather(
            *(self._stop(e.pid, reason) for e in found), return_exceptions=True
        )
        return sum(1 for d in done if d is True)

    async def _stop(self, pid: Pid, reason: Any) -> bool:
        try:
            await self.rt.stop(pid, reason, timeout=30.0)
        except NoProcessError:
            return False
        return True

    # ------------------------------------------------------------------ messaging

    async def _owner(self, name: str) -> Process | None:
        _check_name(name)
        p = self.resolve_cached(name)
        return p if p is not None else await self.resolve_missing(name)

    async def send(self, name: str, message: Any) -> bool:
        """Send ``message`` to the owner of ``name``; ``False`` when the name is not live.
        Resolved by the names cache (the store on a miss)."""
        p = await self._owner(name)
        return p is not None and self.rt.send(p.pid, message)

    async def cast(self, name: str, request: Any) -> bool:
        p = await self._owner(name)
        return p is not None and self.rt.cast(p.pid, request)

    async def call(self, name: str, request: Any, timeout: float | None = 5.0) -> Any:
        """Call the owner of ``name``; ``NoProcessError(name)`` when the name is not live."""
        p = await self._owner(name)
        if p is None:
            raise NoProcessError(name)
        return await self.rt.call(p.pid, request, timeout=timeout)

    # ------------------------------------------------------------------ the names cache

    def resolve_cached(self, name: str) -> Process | None:
        """The owner of the global ``name`` as this node's cache knows it (no I/O): a local
        process, or the stand-in of a remote one; ``None`` when it is known absent, its node is
        down, or it is not known here (then it is read from the store in the background)."""
        pid = self._cache.get(name, _MISSING)
        if pid is _MISSING:
            self._miss.inc()
            if type(name) is str and 1 <= len(name) <= _MAX_NAME:
                self._refresh([name])
            return None
        self._hit.inc()
        return None if pid is None else self._proc(pid)

    async def resolve_missing(self, name: str) -> Process | None:
        """The owner of ``name`` read from the store (``Runtime.call`` on a cache miss);
        ``None`` when it is not live or the store cannot be read (logged)."""
        if type(name) is not str or not 1 <= len(name) <= _MAX_NAME:
            return None
        self._to_refresh.discard(name)  # read here: not again in the background
        with tracer.start_as_current_span(
            "cluster.names.lookup", attributes={"netsuke.name": name}
        ):
            try:
                e = await self.lookup(name)
            except Exception as err:
                log.warning(
                    "cluster_name_lookup_failed", node=self.rt.node, name=name, error=repr(err)
                )
                return None
        return None if e is None else self._proc(e.pid)

    def _proc(self, pid: Pid) -> Process | None:
        rt = self.rt
        if pid.node == rt.node:
            return None if self.membership.fenced else rt._local_proc(pid)
        t = rt.transport
        return t.resolve(pid) if t is not None else None

    def cached_names(self) -> dict[str, Pid]:
        """The names this node's cache holds now, with their owners (for inspection)."""
        return {n: p for n, p in self._cache.items() if p is not None}

    def _set(self, name: str, pid: Pid | None) -> None:
        """This node changed ``name``: the cache knows at once, and no read in flight may
        overwrite it."""
        self._epoch += 1
        self._put(name, pid)

    def _put(self, name: str, pid: Pid | None) -> None:
        cache = self._cache
        if len(cache) >= _MAX_CACHED and name not in cache:
            cache.clear()
        cache[name] = pid

    def _fill(self, name: str, pid: Pid | None, epoch: int) -> None:
        if epoch == self._epoch:
            self._put(name, pid)

    def _publish(self, names: list[str] | None, node: str | None = None) -> None:
        t = self.transport
        if t is not None:
            NAME_INVALIDATIONS.labels(self.membership.node_id, "published").inc()
            t.publish_names_changed(names, node)

    def _on_invalidation(self, sender: str, names: list[str] | None, node: str | None) -> None:
        NAME_INVALIDATIONS.labels(self.membership.node_id, "received").inc()
        if names is None:
            if node is not None:
                self._invalidate_node(node)
            return
        self._epoch += 1
        for n in names:
            self._cache.pop(n, None)
        self._refresh(names)

    def _on_node_down(self, node_id: str) -> None:
        NAME_INVALIDATIONS.labels(self.membership.node_id, "node_down").inc()
        self._invalidate_node(node_id)

    def _invalidate_node(self, node_id: str) -> None:
        """Forget the names of ``node_id`` (down, or fenced): not read again at once (a node
        may own many), a miss reads each when it is used."""
        self._epoch += 1
        gone = [n for n, p in self._cache.items() if p is not None and p.node == node_id]
        for n in gone:
            del self._cache[n]

    def _refresh(self, names: list[str]) -> None:
        """Read ``names`` from the store in the background (one query per batch)."""
        if not names or self._closed:
            return
        self._to_refresh.update(names)
        if self._refresher is None or self._refresher.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # resolved outside the node's loop: a later miss reads them
                return
            self._refresher = loop.create_task(self._refresh_loop())

    _closed = False

    async def _refresh_loop(self) -> None:
        tried: dict[str, int] = {}
        while self._to_refresh and not self._closed:
            batch: list[str] = []
            while self._to_refresh and len(batch) < _REFRESH_BATCH:
                batch.append(self._to_refresh.pop())
            epoch = self._epoch
            try:
                entries = await self._entries(NAMES.c.name.in_(batch))
            except Exception as e:
                log.warning("cluster_names_refresh_failed", node=self.rt.node, error=repr(e))
                await asyncio.sleep(1.0)  # misses schedule them again
                continue
            if epoch != self._epoch:  # invalidated meanwhile: once more, then let misses ask
                again = [n for n in batch if tried.get(n, 0) < 1]
                for n in again:
                    tried[n] = tried.get(n, 0) + 1
                self._to_refresh.update(again)
                continue
            found = {e.name: e.pid for e in entries}
            for n in batch:
                self._put(n, found.get(n))

    async def _warm(self) -> None:
        """Read every live name once, when the node joins."""
        epoch = self._epoch
        try:
            entries = await self._entries()
        except Exception as err:
            log.warning("cluster_names_warm_failed", node=self.rt.node, error=repr(err))
            return
        if epoch == self._epoch:
            for e in entries:
                self._cache.setdefault(e.name, e.pid)
        log.info("cluster_names_cache_warm", node=self.rt.node, names=len(entries))

    async def close(self) -> None:
        """Stop watching owner processes (the names go with the lease on ``leave``); wait for
        releases in flight; stop resolving names for the runtime."""
        self._closed = True
        for f in self._watchers.values():
            f.cancel()
        self._watchers.clear()
        await asyncio.gather(*list(self._releasing), return_exceptions=True)
        for task in (self._warmer, self._refresher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.rt.name_fallback is self:
            self.rt.name_fallback = None
        t = self.transport
        if t is not None:
            with contextlib.suppress(ValueError):
                t.names_listeners.remove(self._on_invalidation)
            with contextlib.suppress(ValueError):
                t.down_listeners.remove(self._on_node_down)


async def _owner_live(conn: AsyncConnection, node: str, inc: int) -> bool:
    row = (
        await conn.execute(
            select(NODES.c.name).where(
                NODES.c.name == node,
                NODES.c.incarnation == inc,
                NODES.c.state == LIVE,
                NODES.c.expires_at > db_now(conn),
            )
        )
    ).first()
    return row is not None


def _meta(raw: Any) -> Any:
    if isinstance(raw, dict) and "v" in raw:
        try:
            return from_wire(raw["v"])
        except Exception:
            return None
    return None
