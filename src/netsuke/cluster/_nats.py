"""The NATS transport: nodes in separate OS processes, one kernel namespace.

Each node has an id ``name#incarnation`` (the incarnation is chosen when the node starts), which
is the ``node`` of every Pid it makes: a restarted node has a new id, so a predecessor's pids
never reach it (they answer ``noproc``). Each node holds three NATS subscriptions, whatever the
number of its processes: ``<prefix>.node.<id>.>`` (frames and call replies for it),
``<prefix>.hb`` (heartbeats of all nodes) and ``<prefix>.names`` (global names that changed
owner: the names caches' invalidations).

A foreign pid is represented on this node by a *remote stand-in*, a process object that turns
the kernel's mailbox operations into frames: ``send``/``cast`` are one-way frames, ``call`` is a
request with a reply subject (the caller's timeout is the kernel's), exit signals, links and
monitors are frames too, answered by the other node. When a peer stops heartbeating (or its
subscription is gone, which NATS reports at once as "no responders") the node is *down*: every
stand-in of that node exits with ``noconnection``, which fires each link and monitor once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from prometheus_client import Counter

from netsuke._nats_flush import flush_subscriptions
from netsuke.events import topics
from netsuke.kernel import (
    NOPROC,
    ArgumentError,
    Down,
    From,
    NoProcessError,
    Pid,
    Process,
    ProcessExitedError,
    Ref,
    Runtime,
    Transport,
)
from netsuke.kernel._messages import Cast, SysStop
from netsuke.kernel._process import F_DEAD
from netsuke.kernel._runtime import _add_link, _drop_link
from netsuke.observability import REGISTRY

from ._codec import (
    DecodeError,
    EncodeError,
    RemoteError,
    dumps,
    encode_reason,
    from_wire,
    read_json,
    to_wire,
)

__all__ = ["NOCONNECTION", "ClusterConnectError", "NatsTransport", "NodeDown", "join"]

log = structlog.get_logger("netsuke.cluster")
tracer = trace.get_tracer("netsuke.cluster")

NOCONNECTION: Final = "noconnection"
"""The exit reason of links and monitors on processes of a node that went down or was cut off."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KINDS = frozenset(
    {
        "send",
        "cast",
        "call",
        "ok",
        "err",
        "exited",
        "noproc",
        "pong",
        "link",
        "unlink",
        "exit",
        "mon",
        "demon",
        "down",
        "stop",
        "ping",
        "nd",
        "nda",
        "hb",
        "bye",
        "inv",
    }
)

FRAMES = Counter(
    "netsuke_cluster_frames",
    "Frames between nodes, by direction (sent, received) and kind (counted in plain integers on"
    " the hot path and added here every heartbeat interval and when the transport closes).",
    ["node", "direction", "kind"],
    registry=REGISTRY,
)
DROPPED = Counter(
    "netsuke_cluster_frames_dropped",
    "Frames from peers that were dropped: reason is undecodable, malformed or handler_error.",
    ["node", "reason"],
    registry=REGISTRY,
)
NODE_DOWN = Counter(
    "netsuke_cluster_nodes_down",
    "Peer nodes seen going down (heartbeats stopped, no responders, left, or replaced).",
    ["node", "cause"],
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class NodeDown:
    """Delivered to a process that asked ``monitor_node(node)`` when that node goes down."""

    node: str


def split_node_id(node_id: str) -> tuple[str, int] | None:
    """``("alpha", 17)`` for ``"alpha#17"``; ``None`` for anything that is not a cluster id."""
    name, sep, inc = node_id.partition("#")
    if not sep or not _NAME.match(name) or not inc.isdigit():
        return None
    return name, int(inc)


class _Remote(Process):
    """The stand-in of a process of another node (never started, never in a process table)."""

    __slots__ = ("_call_hdr", "_rname", "_rpid")
    hibernate_after = None
    _rpid: Pid  # for a name on another node (``(name, node)``): ``Pid(node, 0)``
    _rname: str | None
    _call_hdr: bytes | None  # the bytes of a call frame before its payload (made on first use)

    @property
    def pid(self) -> Pid:
        return self._rpid

    def _deliver(self, message: Any) -> None:
        gw: _Gateway = self._rt  # type: ignore[assignment]
        gw.transport._deliver_remote(self, message)

    def __repr__(self) -> str:
        if self._rname is not None:
            return f"<remote {(self._rname, self._rpid.node)!r}>"
        return f"<remote {self._rpid!r}>"

    def _dest(self) -> dict[str, Any]:
        """The frame fields that name this process on its node: its pid, or its name."""
        return {"to": self._rpid} if self._rname is None else {"tn": self._rname}

    def _target(self) -> Any:
        return self._rpid if self._rname is None else (self._rname, self._rpid.node)


class _Gateway:
    """What a stand-in has as its node: exit signals and exit waits go to the network, the rest
    of the kernel's bookkeeping to the local runtime."""

    def __init__(self, transport: NatsTransport, rt: Runtime) -> None:
        self.transport = transport
        self.rt = rt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rt, name)

    @property
    def _draining(self) -> bool:
        return self.rt._draining

    @_draining.setter
    def _draining(self, value: bool) -> None:
        self.rt._draining = value

    def _signal(
        self,
        target: Process,
        reason: Any,
        sender: Process | None,
        sender_pid: Pid | None,
        *,
        explicit: bool = False,
    ) -> None:
        assert isinstance(target, _Remote)
        self.transport._post(
            target._rpid.node,
            "exit",
            {"from": sender_pid, **target._dest(), "x": explicit},
            reason=reason,
        )

    def _exit_future(self, p: Process) -> asyncio.Future[Any]:
        assert isinstance(p, _Remote)
        return self.transport._remote_exit_future(p)


class _ReplyTo:
    """The ``future`` of a call from another node, as the kernel uses it (``done``,
    ``set_result``, ``set_exception``): the answer is published the moment it is set, without
    a done-callback's turn of the event loop."""

    __slots__ = ("_done", "reply", "transport")

    def __init__(self, transport: NatsTransport, reply: str) -> None:
        self.transport = transport
        self.reply = reply
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the call was answered already")
        self._done = True
        self.transport._answer_ok(self.reply, value)

    def set_exception(self, error: BaseException) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the call was answered already")
        self._done = True
        self.transport._answer_error(self.reply, error)


class _Peer:
    __slots__ = ("last_seen", "node_id", "probe", "probe_at")

    def __init__(self, node_id: str, now: float) -> None:
        self.node_id = node_id
        self.last_seen = now
        self.probe = 0  # the id of a "ping" request in flight to it, if any
        self.probe_at = 0.0


class NatsTransport(Transport):
    """Joins this node to the others on a NATS server. Options (defaults in brackets):

    * ``servers``: NATS URL(s), e.g. ``"nats://127.0.0.1:4222"``.
    * ``name``: the node name (letters, digits, ``_``, ``-``); unique in the cluster.
    * ``incarnation`` [microseconds since the epoch at construction]: tells this run of the node
      from earlier and later ones.
    * ``heartbeat_interval`` [``0.5``] seconds between heartbeats; ``down_after`` [``3.0``]
      seconds of silence after which a peer is down (links and monitors fire ``noconnection``).
    * ``prefix`` [``"netsuke"``]: the first token of every subject (separates clusters that
      share a NATS server).
    * ``connect_options``: passed to ``nats.connect`` (credentials, TLS, ...); the transport's
      defaults notice a dead server within seconds (``ping_interval=2``,
      ``max_outstanding_pings=2``) and reconnect forever (``max_reconnect_attempts=-1``).

    Call :meth:`connect` before starting the runtime with ``node=transport.node_id`` and this
    transport, and :meth:`close` after it stopped; :func:`join` does all three.
    """

    def __init__(
        self,
        servers: str | list[str],
        name: str,
        *,
        incarnation: int | None = None,
        heartbeat_interval: float = 0.5,
        down_after: float = 3.0,
        prefix: str = "netsuke",
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"node name {name!r}: use 1-64 letters, digits, '_' or '-'")
        if not _NAME.match(prefix):
            raise ValueError(f"subject prefix {prefix!r}: use letters, digits, '_' or '-'")
        if heartbeat_interval <= 0 or down_after <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < down_after")
        self.name = name
        self.incarnation = incarnation if incarnation is not None else time.time_ns() // 1000
        self.node_id = f"{name}#{self.incarnation}"
        self.servers = servers
        self.heartbeat_interval = heartbeat_interval
        self.down_after = down_after
        self.prefix = prefix
        self._connect_options = dict(connect_options or {})
        self.nc: NatsClient | None = None
        self.rt: Runtime | None = None
        self._gw: _Gateway | None = None
        self._remotes: dict[Pid, _Remote] = {}
        self._mons: dict[Ref, _Remote] = {}
        self._calls: dict[int, tuple[From, str, Any]] = {}  # id: (call, node id, target)
        self._named: dict[tuple[str, str], _Remote] = {}
        self._probes: dict[int, str] = {}  # ping request id: peer node id
        self._call_ids = 0
        self._peers: dict[str, _Peer] = {}
        self._unheard: dict[str, _Peer] = {}  # node id: members not heard yet (expect)
        self._down: set[str] = set()
        self._awaiting: dict[str, int] = {}  # down by our verdict, until it acknowledges (nda)
        self._nd_seq = 0
        self._nd_seen: dict[str, int] = {}
        self._node_watchers: dict[str, list[Pid]] = {}
        self._out: deque[tuple[str, bytes, str, dict[str, str] | None]] = deque()
        self._pumping = False  # frames are being handed to nats-py (see _pump)
        self._failing = False
        # frames by kind, added to FRAMES every heartbeat (Counter.inc takes a lock)
        self._sent: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self._subjects: dict[str, str] = {}  # node id: its inbound subject
        self._tracked: set[str] = set()  # node ids _track found among the peers already
        self._reply_prefix = f"{prefix}.node.{self.node_id}.r."
        self._tail_at = len(prefix) + len(self.node_id) + 7  # after "<p>.node.<id>."
        self._tasks: list[asyncio.Task[None]] = []  # publishes that had to wait (_finish)
        self._ticker_task: asyncio.Task[None] | None = None
        self._closing = False
        self.names_listeners: list[Callable[[str, list[str] | None, str | None], None]] = []
        """Called with ``(sender node id, names, owner node id)`` for each invalidation of
        global names another node published (:meth:`publish_names_changed`)."""
        self.down_listeners: list[Callable[[str], None]] = []
        """Called with the node id of each peer this node finds down."""

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Connect to NATS and subscribe (three subscriptions, whatever the process count)."""
        opts: dict[str, Any] = {
            "name": self.node_id,
            "ping_interval": 2,
            "max_outstanding_pings": 2,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 5,
            "allow_reconnect": True,
            "error_cb": self._nats_error,
            "disconnected_cb": self._nats_disconnected,
            "reconnected_cb": self._nats_reconnected,
        }
        opts.update(self._connect_options)
        forever = opts["max_reconnect_attempts"]
        if "max_reconnect_attempts" not in self._connect_options:
            opts["max_reconnect_attempts"] = 2  # the first connection fails fast, then forever
        try:
            self.nc = await nats.connect(self.servers, **opts)
        except Exception as e:
            raise ClusterConnectError(
                f"cannot connect to NATS at {self.servers}: {type(e).__name__}: {e}"
            ) from e
        self.nc.options["max_reconnect_attempts"] = forever
        await self.nc.subscribe(f"{self.prefix}.node.{self.node_id}.>", cb=self._on_msg)
        await self.nc.subscribe(f"{self.prefix}.hb", cb=self._on_hb)
        await self.nc.subscribe(f"{self.prefix}.names", cb=self._on_names)
        try:
            await flush_subscriptions(self.nc)
        except Exception as e:
            await self.nc.close()
            raise ClusterConnectError(
                f"NATS at {self.servers} did not confirm this node's subscriptions: {e!r}"
            ) from e

    async def _nats_error(self, e: Exception) -> None:
        log.warning("cluster_nats_error", node=self.node_id, error=f"{type(e).__name__}: {e}")

    async def _nats_disconnected(self) -> None:
        log.warning("cluster_nats_disconnected", node=self.node_id)
        if self._closing:
            return
        # Frames to and from this node may be lost from now on (the server drops what matches
        # no subscription): every peer is down for this node, as in Erlang when a connection
        # breaks, and each one is told so when it is heard again.
        for peer in list(self._peers.values()):
            self._node_down(peer.node_id, "disconnected")
        self._unheard.clear()  # silent because of this node: awaited again once connected

    async def _nats_reconnected(self) -> None:
        log.info("cluster_nats_reconnected", node=self.node_id)

    async def close(self) -> None:
        """Flush what is queued, tell the peers this node leaves, and disconnect."""
        self._closing = True
        if self._ticker_task is not None:
            self._ticker_task.cancel()
            await asyncio.gather(self._ticker_task, return_exceptions=True)
            self._ticker_task = None
        for _ in range(200):  # frames queued behind a publish that waits: up to 2 s
            if not self._pumping and not self._out:
                break
            await asyncio.sleep(0.01)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._count_frames()
        nc = self.nc
        if nc is None or nc.is_closed:
            return
        try:
            await nc.publish(f"{self.prefix}.hb", _frame("bye", {"n": self.node_id}))
            await nc.flush(timeout=2)
        except Exception as e:  # a closed connection must not fail the shutdown
            log.warning("cluster_close_flush_failed", node=self.node_id, error=repr(e))
        await nc.close()

    def attach(self, runtime: Runtime) -> None:
        if self.rt is not None:
            raise ValueError(f"node {self.node_id!r} is already attached to this transport")
        if runtime.node != self.node_id:
            raise ValueError(f"the runtime's node must be {self.node_id!r}, not {runtime.node!r}")
        if self.nc is None:
            raise RuntimeError("NatsTransport.connect() must be awaited before the node starts")
        self.rt = runtime
        self._gw = _Gateway(self, runtime)
        self._ticker_task = asyncio.get_running_loop().create_task(self._ticker())
        log.info("cluster_node_joined", node=self.node_id, servers=str(self.servers))

    def detach(self, runtime: Runtime) -> None:
        if self.rt is runtime:
            self.rt = None

    def nodes(self) -> list[str]:
        """This node and the peers currently seen alive (node ids)."""
        return sorted([self.node_id, *(p.node_id for p in self._peers.values())])

    def is_down(self, node_id: str) -> bool:
        """Whether this node has judged ``node_id`` down and not heard it come back since."""
        return node_id in self._down

    def expect(self, node_id: str) -> bool:
        """``node_id`` is a member (the store says so) that this node must hear: if no
        heartbeat of it arrives within ``down_after`` from now, it is down here (cause
        ``unheard``; ``no_responders`` sooner when a probe finds its subscription gone), as a
        peer that fell silent is. A member cut off NATS before this node joined (or before
        this node first heard it) is otherwise never judged down. Nothing happens for this
        node, a peer heard already (this incarnation or a newer one), a node down already or
        one awaited already; ``True`` when ``node_id`` is awaited from now on."""
        parts = split_node_id(node_id)
        rt = self.rt
        if parts is None or rt is None or node_id == self.node_id or node_id in self._down:
            return False
        if node_id in self._unheard:
            return False
        peer = self._peers.get(parts[0])
        if peer is not None:
            heard = split_node_id(peer.node_id)
            if heard is not None and heard[1] >= parts[1]:
                return False
        self._unheard[node_id] = _Peer(node_id, rt._loop.time())
        return True

    # ----------------------------------------------------------------- resolution

    def resolve(self, pid: Pid) -> Process | None:
        if self._gw is None or self._closing:
            return None
        parts = split_node_id(pid.node)
        if parts is None or pid.node in self._down:
            return None
        peer = self._peers.get(parts[0])
        if peer is not None and peer.node_id != pid.node:
            return None  # another incarnation of that name is the live one: noproc
        if parts[0] == self.name:
            return None  # an earlier incarnation of this very node
        return self._remote(pid)

    def resolve_name(self, name: str, node: str) -> Process | None:
        """The process registered as ``name`` on ``node`` (Erlang's ``{Name, Node}``): a
        stand-in that the other node resolves in its own registry, frame by frame (``noproc``
        when nothing is registered there). ``None`` when ``node`` is known down (or replaced) or is
        not a cluster node id; a node not heard yet is addressed blind, as pids are."""
        key = (name, node)
        r = self._named.get(key)
        if r is not None and not r._flags & F_DEAD and not self._closing:
            return r  # dropped from the table when its node goes down or is replaced
        if self.resolve(Pid(node, 0)) is None:
            return None
        if r is None or r._flags & F_DEAD:
            r = self._new_remote(Pid(node, 0), name)
            self._named[key] = r
        return r

    def _remote(self, pid: Pid) -> _Remote:
        r = self._remotes.get(pid)
        if r is None or r._flags & F_DEAD:
            r = self._new_remote(pid, None)
            self._remotes[pid] = r
        return r

    def _new_remote(self, pid: Pid, name: str | None) -> _Remote:
        r = object.__new__(_Remote)
        r._rt = self._gw  # type: ignore[assignment]
        r._rpid = pid
        r._rname = name
        r._call_hdr = None
        r._id = pid.id
        r._mailbox = None
        r._task = None
        r._waiter = None
        r._current = None
        r._flags = 0
        r._reg = None
        r._parent = None
        r._spec = None
        r._arg = None
        r._ext = None
        r._links = None
        return r

    def _track(self, node_id: str) -> None:
        """A link or monitor now depends on ``node_id``: if it never heartbeats, it goes down."""
        if node_id in self._tracked:
            peer = self._peers.get(node_id.partition("#")[0])
            if peer is not None and peer.node_id == node_id:
                return
            self._tracked.discard(node_id)
        parts = split_node_id(node_id)
        if parts is None or self.rt is None:
            return
        peer = self._peers.get(parts[0])
        if peer is None:
            peer = self._peers[parts[0]] = _Peer(node_id, self.rt._loop.time())
        if peer.node_id == node_id:
            if len(self._tracked) > 4096:
                self._tracked.clear()
            self._tracked.add(node_id)

    def _subject(self, node_id: str) -> str:
        s = self._subjects.get(node_id)
        if s is None:
            if len(self._subjects) > 4096:
                self._subjects.clear()
            s = self._subjects[node_id] = f"{self.prefix}.node.{node_id}.in"
        return s

    # ------------------------------------------------------------------ sending

    def _post(
        self,
        node_id: str,
        kind: str,
        fields: dict[str, Any],
        *,
        payload: Any = None,
        reason: Any = None,
        reply: str = "",
        trace_ctx: bool = False,
    ) -> None:
        data: dict[str, Any] = {"k": kind}
        for k, v in fields.items():
            data[k] = to_wire(v)
        if kind in ("send", "cast", "call", "ok"):
            data["m"] = to_wire(payload)  # raises EncodeError naming the type: at send time
        if reason is not None or kind in ("exit", "down", "stop", "exited"):
            data["r"] = encode_reason(reason)
        headers = _trace_headers() if trace_ctx else None
        self._enqueue(self._subject(node_id), dumps(data), reply, headers, kind)

    def _enqueue(
        self, subject: str, body: bytes, reply: str, headers: dict[str, str] | None, kind: str
    ) -> None:
        sent = self._sent
        sent[kind] = sent.get(kind, 0) + 1
        self._out.append((subject, body, reply, headers))
        if not self._pumping:
            if asyncio.current_task() is None:  # a timer or loop callback: publish from a task
                self._pumping = True
                asyncio.get_running_loop().create_task(self._pump_in_task())
            else:
                self._pump()

    async def _pump_in_task(self) -> None:
        self._pumping = False
        self._pump()

    def _pump(self) -> None:
        """Hand the queued frames to nats-py now, in order, without a task switch.

        ``nc.publish`` only appends to the client's pending buffer and wakes its flusher, so
        its coroutine is run here, inside the current task, and almost always finishes at
        once. When it has to wait (its buffer is over the limit and it flushes, or a queue is
        full), a task finishes it, and the frames behind it wait their turn."""
        nc = self.nc
        if nc is None:
            return
        self._pumping = True
        out = self._out
        while out:
            subject, body, reply, headers = out.popleft()
            coro = nc.publish(subject, body, reply=reply, headers=headers)
            try:
                waiting = coro.send(None)
            except StopIteration:
                self._published()
                continue
            except Exception as e:  # disconnected: frames meanwhile are lost, as in Erlang
                self._publish_failed(e)
                continue
            task = asyncio.get_running_loop().create_task(self._finish(coro, waiting))
            self._tasks.append(task)
            task.add_done_callback(self._finished)
            return  # _finish pumps the rest
        self._pumping = False

    async def _finish(self, coro: Any, waiting: Any) -> None:
        """Resume a publish that had to wait (``waiting``: what it yielded), in this task."""
        done = False
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    await asyncio.wait({waiting})  # its outcome is for the publish to see
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    self._published()
                    break
                except Exception as e:
                    self._publish_failed(e)
                    break
            done = True
        finally:
            if not done:
                coro.close()  # cancelled (close()): the frame is not sent
        self._pumping = False
        if not self._closing or self._out:
            self._pump()

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    def _published(self) -> None:
        if self._failing:
            self._failing = False
            log.info("cluster_publish_recovered", node=self.node_id)

    def _publish_failed(self, e: BaseException) -> None:
        DROPPED.labels(self.node_id, "publish_failed").inc()
        if not self._failing:
            log.warning("cluster_publish_failed", node=self.node_id, error=repr(e))
        self._failing = True

    def _deliver_remote(self, r: _Remote, message: Any) -> None:
        t = type(message)
        to = r._rpid
        if t is From:
            # the frame's fields before the payload are the same for every call to this
            # process: written once, then only the payload goes through the codec
            hdr = r._call_hdr
            if hdr is None:
                hdr = r._call_hdr = dumps({"k": "call", **to_wire(r._dest())})[:-1] + b',"m":'
            body = hdr + dumps(to_wire(message.request)) + b"}"  # EncodeError: at send time
            self._call_ids += 1
            cid = self._call_ids
            self._enqueue(
                self._subject(to.node),
                body,
                self._reply_prefix + str(cid),
                _trace_headers(),
                "call",
            )
            self._calls[cid] = (message, to.node, r._target())  # a timed-out one: _prune
            # the reply depends on that node: one never heard from (killed or stopped before
            # its first heartbeat reached us) must still go down, failing this call
            self._track(to.node)
        elif t is Cast:
            self._post(to.node, "cast", r._dest(), payload=message.request, trace_ctx=True)
        elif t is Down:  # r is the stand-in of a remote watcher of one of our processes
            self._post(
                to.node, "down", {"ref": message.ref, "pid": message.pid}, reason=message.reason
            )
        elif t is SysStop:
            ext = r._ext
            if ext is not None and ext.monitored_by:
                for ref in list(ext.monitored_by):
                    if ref not in self._mons:
                        self._watch_remote(ref, r, Pid(self.node_id, 0))
            self._post(to.node, "stop", r._dest(), reason=message.reason)
        else:
            self._post(to.node, "send", r._dest(), payload=message, trace_ctx=True)

    def _watch_remote(self, ref: Ref, r: _Remote, watcher: Pid) -> None:
        self._mons[ref] = r
        self._track(r._rpid.node)
        self._post(r._rpid.node, "mon", {"ref": ref, "w": watcher, **r._dest()})

    def _remote_exit_future(self, r: _Remote) -> asyncio.Future[Any]:
        assert self.rt is not None
        fut: asyncio.Future[Any] = self.rt._loop.create_future()
        ref = self.rt._new_ref()
        ext = r._ensure_ext()
        if ext.monitored_by is None:
            ext.monitored_by = {}
        ext.monitored_by[ref] = fut
        self._watch_remote(ref, r, Pid(self.node_id, 0))
        return fut

    # Transport hooks: the local runtime changed a link or monitor with a stand-in.

    def linked(self, a: Process, b: Process) -> None:
        local, remote = (a, b) if isinstance(b, _Remote) else (b, a)
        if isinstance(remote, _Remote) and not isinstance(local, _Remote):
            if remote._rname is not None:  # Erlang: link({Name, Node}) is badarg
                _drop_link(local, remote)
                _drop_link(remote, local)
                raise ArgumentError(
                    f"cannot link to {remote._target()!r} by name: link to its pid"
                    " (whereis on its node, or a call that returns it)"
                )
            self._track(remote._rpid.node)
            self._post(remote._rpid.node, "link", {"from": local.pid, "to": remote._rpid})

    def unlinked(self, a: Process, b: Process) -> None:
        local, remote = (a, b) if isinstance(b, _Remote) else (b, a)
        if isinstance(remote, _Remote) and not isinstance(local, _Remote):
            self._post(remote._rpid.node, "unlink", {"from": local.pid, "to": remote._rpid})

    def monitored(self, ref: Ref, watcher: Process, target: Process) -> None:
        if isinstance(target, _Remote):
            self._watch_remote(ref, target, watcher.pid)

    def demonitored(self, ref: Ref, watcher: Process, target: Process) -> None:
        if isinstance(target, _Remote) and self._mons.pop(ref, None) is not None:
            self._post(target._rpid.node, "demon", {"ref": ref, **target._dest()})

    def monitor_node(self, watcher: Pid, node_id: str) -> None:
        """Send ``NodeDown(node_id)`` to the local process ``watcher`` when ``node_id`` goes
        down (at once if it is already known down or is not a cluster node id). Fires once."""
        assert self.rt is not None
        parts = split_node_id(node_id)
        if parts is None or node_id in self._down:
            self.rt.send(watcher, NodeDown(node_id))
            return
        self._track(node_id)
        self._node_watchers.setdefault(node_id, []).append(watcher)

    # ----------------------------------------------------------------- receiving

    def _drop(self, reason: str, msg: Msg, error: BaseException | None = None) -> None:
        DROPPED.labels(self.node_id, reason).inc()
        log.warning(
            "cluster_frame_dropped",
            node=self.node_id,
            reason=reason,
            subject=msg.subject,
            size=len(msg.data),
            error=repr(error)[:200] if error is not None else None,
        )

    async def _on_msg(self, msg: Msg) -> None:
        rt = self.rt
        if rt is None:
            return
        tail = msg.subject[self._tail_at :]
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            self._no_responders(tail)
            return
        try:
            f = _parse(msg.data)
        except DecodeError as e:
            self._drop("undecodable", msg, e)
            return
        kind = f["k"]
        label = kind if kind in _KINDS else "other"  # a peer does not choose label values
        received = self._received
        received[label] = received.get(label, 0) + 1
        try:
            if tail[:2] == "r.":
                self._on_reply(tail, f)
            elif headers:  # trace context from the sender: receive under its span
                ctx = propagate.extract(headers)
                with tracer.start_as_current_span(f"cluster.receive {kind}", context=ctx):
                    self._dispatch(rt, kind, f, msg.reply)
            else:
                self._dispatch(rt, kind, f, msg.reply)
        except _Malformed as e:
            self._drop("malformed", msg, e)
        except Exception as e:  # never let a peer's frame crash this node
            self._drop("handler_error", msg, e)

    def _dispatch(self, rt: Runtime, kind: Any, f: dict[str, Any], reply: str) -> None:
        if kind == "send" or kind == "cast":
            p = _local(rt, f)
            if p is not None:
                p._deliver(f.get("m") if kind == "send" else Cast(f.get("m")))
        elif kind == "call":
            self._on_call(rt, f, f.get("m"), reply)
        elif kind == "link":
            self._on_link(rt, _pid(f, "from"), _pid(f, "to"))
        elif kind == "unlink":
            p = rt._local_proc(_pid(f, "to"))
            r = self._remotes.get(_pid(f, "from"))
            if p is not None and r is not None:
                _drop_link(p, r)
                _drop_link(r, p)
        elif kind == "exit":
            self._on_exit(rt, f)
        elif kind == "mon":
            self._on_monitor(rt, _ref(f, "ref"), _pid(f, "w"), f)
        elif kind == "demon":
            p = _local(rt, f)
            ref = _ref(f, "ref")
            if p is not None and p._ext is not None and p._ext.monitored_by is not None:
                w = p._ext.monitored_by.pop(ref, None)
                if w is not None and isinstance(w, Process) and w._ext and w._ext.monitoring:
                    w._ext.monitoring.pop(ref, None)
        elif kind == "down":
            self._on_down(_ref(f, "ref"), _pid(f, "pid"), f.get("r"))
        elif kind == "stop":
            p = _local(rt, f)
            if p is not None:
                p._deliver(SysStop(f.get("r"), None))
        elif kind == "ping":
            if reply:
                self._answer_raw(reply, {"k": "pong"})
        elif kind == "nd":
            self._on_declared_down(rt, _node(f), _seq(f))
        elif kind == "nda":
            self._on_down_acknowledged(rt, _node(f), _seq(f))
        else:
            raise _Malformed(f"unknown frame kind {kind!r}")

    def _on_call(self, rt: Runtime, f: dict[str, Any], request: Any, reply: str) -> None:
        if not reply:
            raise _Malformed("call without a reply subject")
        p = _local(rt, f)
        if p is None:
            self._enqueue(reply, _NOPROC_REPLY, "", None, "reply")
            return
        m = From(request, _ReplyTo(self, reply))  # type: ignore[arg-type]
        # An idle process with a plain handle_call answers now, in this task: the reply is
        # published before the next frame is read, without a turn of the process's task.
        if not p._call_in_place(m):
            p._deliver(m)

    def _answer_ok(self, reply: str, value: Any) -> None:
        try:
            body = b'{"k":"ok","m":' + dumps(to_wire(value)) + b"}"
        except EncodeError as ee:
            self._answer_raw(reply, {"k": "err", "e": to_wire(ee)})
            return
        self._enqueue(reply, body, "", None, "reply")

    def _answer_error(self, reply: str, e: BaseException) -> None:
        if isinstance(e, ProcessExitedError):
            self._answer_raw(reply, {"k": "exited", "r": encode_reason(e.reason)})
        elif isinstance(e, NoProcessError):
            self._answer_raw(reply, {"k": "noproc"})
        else:
            self._answer_raw(reply, {"k": "err", "e": to_wire(e)})

    def _answer_raw(self, reply: str, data: dict[str, Any]) -> None:
        self._enqueue(reply, dumps(data), "", None, "reply")

    def _on_reply(self, tail: str, f: dict[str, Any]) -> None:
        try:
            cid = int(tail[2:])
        except ValueError:
            raise _Malformed("bad reply subject") from None
        entry = self._calls.pop(cid, None)
        if entry is None:
            self._probes.pop(cid, None)  # a probe's answer: alive (its heartbeat will say so)
            return  # or the caller timed out or gave up
        m, _node_id, pid = entry
        fut = m.future
        if fut.done():
            return
        kind = f.get("k")
        if kind == "ok":
            fut.set_result(f.get("m"))
        elif kind == "exited":
            fut.set_exception(ProcessExitedError(pid, f.get("r")))
        elif kind == "noproc":
            fut.set_exception(NoProcessError(pid))
        elif kind == "err":
            e = f.get("e")
            fut.set_exception(e if isinstance(e, RemoteError) else RemoteError("Error", repr(e)))
        else:
            fut.set_exception(RemoteError("ProtocolError", f"bad reply kind {kind!r}"))

    def _no_responders(self, tail: str) -> None:
        """A call's destination has no subscription: its node is gone (NATS knows at once)."""
        if not tail.startswith("r."):
            return
        try:
            cid = int(tail[2:])
        except ValueError:
            return
        entry = self._calls.pop(cid, None)
        if entry is None:
            probed = self._probes.pop(cid, None)
            if probed is not None:
                self._node_down(probed, "no_responders")
            return
        m, node_id, pid = entry
        self._node_down(node_id, "no_responders")
        if not m.future.done():
            m.future.set_exception(NoProcessError(pid))

    def _on_link(self, rt: Runtime, frm: Pid, to: Pid) -> None:
        p = rt._local_proc(to)
        if p is None:  # Erlang: linking to a process that is gone gives exit signal noproc
            self._post(frm.node, "exit", {"from": to, "to": frm, "x": False}, reason=NOPROC)
            return
        if frm.node in self._down:  # the linker's end fires; nothing was linked here
            self._post(frm.node, "exit", {"from": to, "to": frm, "x": False}, reason=NOCONNECTION)
            return
        r = self._remote(frm)
        self._track(frm.node)
        _add_link(p, r)
        _add_link(r, p)

    def _on_exit(self, rt: Runtime, f: dict[str, Any]) -> None:
        frm = f.get("from")
        if frm is not None and type(frm) is not Pid:
            raise _Malformed("bad 'from'")
        reason = f.get("r")
        p = _local(rt, f)
        if p is None:
            return
        if f.get("x") is True:
            rt._signal(p, reason, None, frm, explicit=True)
            return
        r = self._remotes.get(frm) if frm is not None else None
        if r is None:
            return
        ls = p._links
        if not (ls is r or (type(ls) is set and r in ls)):
            return  # unlinked meanwhile, or already fired: signals fire once
        _drop_link(p, r)
        _drop_link(r, p)
        rt._signal(p, reason, r, frm)

    def _on_monitor(self, rt: Runtime, ref: Ref, watcher: Pid, f: dict[str, Any]) -> None:
        p = _local(rt, f)
        if p is None or watcher.node in self._down:
            to = f.get("to") if "to" in f else Pid(self.node_id, 0)  # by name: the name form
            reason = NOPROC if p is None else NOCONNECTION
            self._post(watcher.node, "down", {"ref": ref, "pid": to}, reason=reason)
            return
        r = self._remote(watcher)
        self._track(watcher.node)
        pe = p._ensure_ext()
        if pe.monitored_by is None:
            pe.monitored_by = {}
        pe.monitored_by[ref] = r
        re_ = r._ensure_ext()
        if re_.monitoring is None:
            re_.monitoring = {}
        re_.monitoring[ref] = p

    def _on_down(self, ref: Ref, pid: Pid, reason: Any) -> None:
        r = self._mons.pop(ref, None)
        if r is None or r._ext is None or r._ext.monitored_by is None:
            return  # demonitored meanwhile, or already fired
        w = r._ext.monitored_by.pop(ref, None)
        names = r._ext.monitor_names
        who = names.pop(ref, pid) if names else pid  # a monitor by name reports the name form
        if isinstance(w, Process):
            if w._ext is not None and w._ext.monitoring is not None:
                w._ext.monitoring.pop(ref, None)
            if w.alive:
                w._deliver(Down(ref, who, reason))
        elif isinstance(w, asyncio.Future) and not w.done():
            w.set_result(reason)

    # ------------------------------------------------------------ global names

    def publish_names_changed(self, names: list[str] | None, node: str | None = None) -> None:
        """Tell every node that the global ``names`` (or, with ``names=None``, all the names
        owned by ``node``) changed owner: their caches drop them and read them again."""
        if self.nc is None or self._closing:
            return
        fields: dict[str, Any] = {"n": self.node_id, "names": names, "node": node}
        self._enqueue(f"{self.prefix}.names", _frame("inv", fields), "", None, "inv")

    async def _on_names(self, msg: Msg) -> None:
        if self.rt is None:
            return
        try:
            f = _parse(msg.data)
            sender = _node(f)
            names = f.get("names")
            node = f.get("node")
            if f.get("k") != "inv" or not (
                names is None or (type(names) is list and all(type(n) is str for n in names))
            ):
                raise _Malformed("bad names invalidation")
            if node is not None and type(node) is not str:
                raise _Malformed("bad node in names invalidation")
        except (DecodeError, _Malformed) as e:
            self._drop("undecodable" if isinstance(e, DecodeError) else "malformed", msg, e)
            return
        if sender == self.node_id:
            return
        received = self._received
        received["inv"] = received.get("inv", 0) + 1
        for cb in list(self.names_listeners):
            try:
                cb(sender, names, node)
            except Exception as e:
                self._drop("handler_error", msg, e)

    # ------------------------------------------------------------ membership

    async def _on_hb(self, msg: Msg) -> None:
        rt = self.rt
        if rt is None:
            return
        try:
            f = _parse(msg.data)
            raw_id = f.get("n")
            parts = split_node_id(raw_id) if type(raw_id) is str else None
            if parts is None:
                raise _Malformed("bad node id")
            node_id = str(raw_id)
        except (DecodeError, _Malformed) as e:
            self._drop("undecodable", msg, e)
            return
        if node_id == self.node_id:
            return
        if self._unheard:
            self._unheard.pop(node_id, None)
        name, inc = parts
        if f.get("k") == "bye":
            self._node_down(node_id, "left")
            return
        if name == self.name:
            log.error("cluster_duplicate_node_name", node=self.node_id, other=node_id)
            return
        now = rt._loop.time()
        if node_id in self._down:
            seq = self._awaiting.get(node_id)
            if seq is not None:  # we declared it down: it must fire its side before it is up
                self._post(node_id, "nd", {"n": self.node_id, "c": seq})
            return  # left, replaced, or not acknowledged yet
        peer = self._peers.get(name)
        if peer is None:
            self._peers[name] = _Peer(node_id, now)
            log.info("cluster_node_up", node=self.node_id, peer=node_id)
            rt.events.publish(topics.CLUSTER_NODE_JOINED, node=self.node_id, peer=node_id)
            return
        if peer.node_id == node_id:
            peer.last_seen = now
            if peer.probe:
                self._probes.pop(peer.probe, None)
                peer.probe = 0
            return
        old = split_node_id(peer.node_id)
        if old is not None and inc > old[1]:  # a restart: the predecessor is gone
            self._node_down(peer.node_id, "replaced")
            self._peers[name] = _Peer(node_id, now)
            log.info("cluster_node_up", node=self.node_id, peer=node_id)
            rt.events.publish(topics.CLUSTER_NODE_JOINED, node=self.node_id, peer=node_id)

    def _on_declared_down(self, rt: Runtime, node_id: str, seq: int) -> None:
        """``node_id`` declared this node down (it stopped hearing us, or its connection broke):
        our links and monitors on its processes fire too, once per verdict, then we answer."""
        if seq > self._nd_seen.get(node_id, 0):
            self._nd_seen[node_id] = seq
            if node_id not in self._down:
                self._node_down(node_id, "peer_declared_down", confirm=False)
                self._up_again(rt, node_id)
        self._post(node_id, "nda", {"n": self.node_id, "c": seq})

    def _on_down_acknowledged(self, rt: Runtime, node_id: str, seq: int) -> None:
        if self._awaiting.get(node_id) == seq:
            del self._awaiting[node_id]
            self._up_again(rt, node_id)

    def _up_again(self, rt: Runtime, node_id: str) -> None:
        """A node that was down (same incarnation) fired its side: it is a peer again."""
        parts = split_node_id(node_id)
        assert parts is not None
        self._down.discard(node_id)
        self._awaiting.pop(node_id, None)
        peer = self._peers.get(parts[0])
        if peer is not None:  # another incarnation is live: this one stays gone
            if peer.node_id != node_id:
                self._down.add(node_id)
            return
        self._peers[parts[0]] = _Peer(node_id, rt._loop.time())
        log.info("cluster_node_up_again", node=self.node_id, peer=node_id)

    async def _ticker(self) -> None:
        """Heartbeats every ``heartbeat_interval``; peers checked four times as often.

        A peer whose heartbeat is overdue (``1.5 * heartbeat_interval`` of silence) is probed:
        a ``ping`` request to its subject. If its connection is gone (a crash, SIGKILL), the
        server has already dropped its subscription and answers "no responders" at once: the
        peer is down within about a second instead of ``down_after``. A peer that is only slow
        or stopped (SIGSTOP) keeps its subscription; it is down after ``down_after``."""
        assert self.nc is not None
        hb = _frame("hb", {"n": self.node_id})
        subject = f"{self.prefix}.hb"
        step = self.heartbeat_interval / 4
        overdue = self.heartbeat_interval * 1.5
        next_hb = 0.0
        while True:
            rt = self.rt
            if rt is not None:
                now = rt._loop.time()
                if now >= next_hb:
                    self._enqueue(subject, hb, "", None, "hb")
                    next_hb = now + self.heartbeat_interval
                    self._prune()
                    self._count_frames()
                for peer in list(self._peers.values()):
                    silent = now - peer.last_seen
                    if silent > self.down_after:
                        self._node_down(peer.node_id, "heartbeat_timeout")
                    elif silent > overdue and (
                        not peer.probe or now - peer.probe_at > self.heartbeat_interval
                    ):
                        # Again if unanswered: a probe sent just before the server saw the
                        # connection close reached the dead connection and gets no answer.
                        self._probe(peer, now)
                if self._unheard:
                    self._check_unheard(now, overdue)
            await asyncio.sleep(step)

    def _check_unheard(self, now: float, overdue: float) -> None:
        """Members awaited by :meth:`expect` and still not heard: probed once overdue, down
        after ``down_after``."""
        for node_id, peer in list(self._unheard.items()):
            if node_id in self._down:
                del self._unheard[node_id]
            elif now - peer.last_seen > self.down_after:
                del self._unheard[node_id]
                self._node_down(node_id, "unheard")
            elif now - peer.last_seen > overdue and (
                not peer.probe or now - peer.probe_at > self.heartbeat_interval
            ):
                self._probe(peer, now)

    def _probe(self, peer: _Peer, now: float) -> None:
        self._probes.pop(peer.probe, None)
        self._call_ids += 1
        cid = peer.probe = self._call_ids
        peer.probe_at = now
        self._probes[cid] = peer.node_id
        self._post(peer.node_id, "ping", {}, reply=f"{self.prefix}.node.{self.node_id}.r.{cid}")

    def _count_frames(self) -> None:
        """Add the frames counted since the last time to ``FRAMES``."""
        for direction, counts in (("sent", self._sent), ("received", self._received)):
            if counts:
                for kind, n in counts.items():
                    FRAMES.labels(self.node_id, direction, kind).inc(n)
                counts.clear()

    def _prune(self) -> None:
        calls = self._calls
        if calls:  # calls whose caller gave up (timeout, cancel): no reply will be awaited
            for cid in [c for c, e in calls.items() if e[0].future.done()]:
                del calls[cid]
        for pid, r in list(self._remotes.items()):
            if _idle(r):
                del self._remotes[pid]
        for key, r in list(self._named.items()):
            if _idle(r):
                del self._named[key]

    def _node_down(self, node_id: str, cause: str, *, confirm: bool = True) -> None:
        """``node_id`` is gone: every link and monitor on its processes fires ``noconnection``,
        once; calls waiting on it fail; ``monitor_node`` watchers get ``NodeDown``.

        If it may still be alive (``confirm``: missed heartbeats, no responders, our own
        connection broke), it stays down until it has fired its own side: when it is heard
        again it is sent ``nd`` (declared down) and is up again once it acknowledges."""
        if node_id in self._down or node_id == self.node_id:
            return
        parts = split_node_id(node_id)
        if parts is None:
            return
        self._down.add(node_id)
        if confirm and cause not in ("left", "replaced"):
            self._nd_seq += 1
            self._awaiting[node_id] = self._nd_seq
        peer = self._peers.get(parts[0])
        if peer is not None and peer.node_id == node_id:
            del self._peers[parts[0]]
        NODE_DOWN.labels(self.node_id, cause).inc()
        log.warning("cluster_node_down", node=self.node_id, peer=node_id, cause=cause)
        rt = self.rt
        if rt is None:
            return
        if cause == "left":
            rt.events.publish(topics.CLUSTER_NODE_LEFT, node=self.node_id, peer=node_id)
        else:
            rt.events.publish(
                topics.CLUSTER_NODE_DOWN, node=self.node_id, peer=node_id, cause=cause
            )
        for cid, probed in list(self._probes.items()):
            if probed == node_id:
                del self._probes[cid]
        for ref, r in list(self._mons.items()):
            if r._rpid.node == node_id:
                del self._mons[ref]
        for pid, r in list(self._remotes.items()):
            if pid.node == node_id:
                del self._remotes[pid]
                rt._exit(r, NOCONNECTION)
        for key, r in list(self._named.items()):
            if key[1] == node_id:
                del self._named[key]
                rt._exit(r, NOCONNECTION)
        for cid, (m, call_node, pid) in list(self._calls.items()):
            if call_node == node_id:
                del self._calls[cid]
                if not m.future.done():
                    m.future.set_exception(ProcessExitedError(pid, NOCONNECTION))
        for w in self._node_watchers.pop(node_id, []):
            p = rt._local_proc(w)
            if p is not None:
                p._deliver(NodeDown(node_id))
        for cb in list(self.down_listeners):
            try:
                cb(node_id)
            except Exception as e:
                log.warning("cluster_down_listener_failed", node=self.node_id, error=repr(e))


class _Malformed(ValueError):
    pass


class ClusterConnectError(ConnectionError):
    """The node could not reach the NATS server (bad URL, refused, timed out)."""


_NOPROC_REPLY = b'{"k":"noproc"}'


def _trace_headers() -> dict[str, str] | None:
    """The current trace context as NATS headers, ``None`` without a live span."""
    span = trace.get_current_span()
    if span is trace.INVALID_SPAN or not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def _frame(kind: str, fields: dict[str, Any]) -> bytes:
    return dumps({"k": kind, **{k: to_wire(v) for k, v in fields.items()}})


def _frame_fields(raw: Any, exact: bool) -> dict[str, Any]:
    if type(raw) is not dict or type(raw.get("k")) is not str:
        raise DecodeError("not a frame object")
    for k, v in raw.items():  # values replaced in place: the dict keeps its size
        t = type(v)
        if t is dict or t is list or t is float:
            raw[k] = from_wire(v, 0, exact)
    return raw


def _parse(data: bytes) -> dict[str, Any]:
    try:
        return read_json(data, _frame_fields)  # type: ignore[no-any-return]
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("frame nested too deeply") from None
    except (ValueError, UnicodeDecodeError, TypeError) as e:
        raise DecodeError(f"not a JSON frame: {type(e).__name__}") from None


def _pid(f: dict[str, Any], key: str) -> Pid:
    v = f.get(key)
    if type(v) is not Pid:
        raise _Malformed(f"field {key!r} is not a pid")
    return v


def _idle(r: _Remote) -> bool:
    """Nothing links, monitors or waits on this stand-in: it can go."""
    ext = r._ext
    return r._links is None and (ext is None or (not ext.monitored_by and not ext.monitoring))


def _local(rt: Runtime, f: dict[str, Any]) -> Process | None:
    """The local process a frame is for: by pid (``to``) or by registered name (``tn``)."""
    to = f.get("to")
    if type(to) is Pid:
        return rt._local_proc(to)
    name = f.get("tn")
    if to is None and type(name) is str:
        return rt._resolve_local_name(name)  # (name, node): this node's registry only
    raise _Malformed("frame names no process ('to' pid or 'tn' name)")


def _node(f: dict[str, Any]) -> str:
    v = f.get("n")
    if type(v) is not str or split_node_id(v) is None:
        raise _Malformed("field 'n' is not a node id")
    return v


def _seq(f: dict[str, Any]) -> int:
    v = f.get("c")
    if type(v) is not int or v <= 0:
        raise _Malformed("field 'c' is not a positive integer")
    return v


def _ref(f: dict[str, Any], key: str) -> Ref:
    v = f.get(key)
    if type(v) is not Ref:
        raise _Malformed(f"field {key!r} is not a ref")
    return v


@asynccontextmanager
async def join(
    servers: str | list[str],
    name: str,
    *,
    transport_options: dict[str, Any] | None = None,
    **runtime_options: Any,
) -> AsyncIterator[Runtime]:
    """Start a node that joins the cluster on ``servers`` as ``name``::

        async with join("nats://127.0.0.1:4222", "alpha") as rt:
            await rt.call(some_remote_pid, "ping")

    ``transport_options`` go to :class:`NatsTransport`, the rest to ``Runtime``."""
    t = NatsTransport(servers, name, **(transport_options or {}))
    await t.connect()
    try:
        async with Runtime(node=t.node_id, transport=t, **runtime_options) as rt:
            yield rt
    finally:
        await t.close()
