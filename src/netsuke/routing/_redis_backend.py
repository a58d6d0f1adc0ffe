"""The Redis Streams backend: tasks in Redis, delivered through consumer groups.

``await RedisTaskBackend.open("redis://host:6379/0")`` connects, checks the server's
persistence, brings the key layout up to date and loads the scripts. Semantics are the
``TaskBackend`` contract (the same conformance tests as the SQL backend), mapped onto Redis
(the keys: ``_redis_lua``):

* **Submit** is one ``MULTI`` for many tasks: an ``MSET`` of each task's two strings (its
  state and its fixed fields, built whole by the client: they never pass through Lua), then
  one Lua script: per task the idempotency key (``SET`` of the key; a duplicate returns the
  first task and deletes the strings just written) and, when due, an ``XADD`` to the ready
  stream of its priority, kind and capabilities
  (``P:r:<priority>|<kind>|<caps>``); a delayed task waits in a sorted set by ``run_at`` and is
  moved to its stream by the first ``take`` after it is due. The reply comes after Redis has
  applied the script, and with ``appendfsync always`` after it is fsynced: acknowledged means
  durable.
* **Take** reads with ``XREADGROUP`` (group ``netsuke``) the streams whose capabilities the
  consumer offers, highest priority first: the entry becomes a pending entry of that
  consumer: the lease. Leases carry their expiry (the backend's clock) in a sorted set; an
  expired one is reclaimed by the next take of a consumer serving its stream with ``XCLAIM``
  (which moves the pending entry and counts a delivery). Lease expiry is decided on the
  backend's clock, not on Redis's idle time, so leases of any length (and a virtual clock in
  tests) are exact; ``extend`` renews the expiry and resets the entry's idle time.
* **Attempts** count deliveries; the worker dead-letters a task delivered past
  ``max_attempts``. **Dead letters** are ``XADD``-ed to the stream ``P:dead`` (for consumers
  that watch it) and listed, requeued and purged like on SQL.
* **Settle** (ack, retry with a later ``run_at``, dead letter) is one script for many tasks
  that checks each lease, then ``XACK``s the entries and trims each stream below its oldest
  pending entry (``XTRIM MINID``: no ``XDEL`` per entry); a retry is a new entry when it is
  due.

Durability: ``durability="require"`` [default] refuses to open unless the server has
``appendonly yes`` and ``appendfsync always`` (``QueueDurabilityError``); ``"warn"`` opens
and logs an error (acknowledged tasks may be lost on a crash of the Redis host). A server
that refuses ``CONFIG GET`` (managed Redis) is reported and, with ``require``, refused.
All keys share one hash tag (the prefix ``{netsuke}:q``), so the scripts run in one slot.

Layout: ``P:v`` holds the key layout's version (3). ``open`` converts a queue of layout 1
(task hashes, the index ``P:all``) in place, 500 tasks per script call, and one of layout 2
by setting the version (its data is valid layout 3); stop the workers of older versions first
(a layout-2 worker would drop the entries of tasks submitted by layout 3 as stale). A layout
newer than this code is refused (``QueueUnavailableError``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from netsuke.store import CAPABLE_ONLY, Page, TaskDraft, TaskRecord, TaskStatus, ValidationError
from netsuke.store._ids import new_ids
from netsuke.store._records_tasks import trusted_task

from ._backend import Settle
from ._errors import TaskNotFoundError, TaskValidationError, check_page
from ._fastjson import loads_exact
from ._observe import log
from ._redis_lua import EXTEND, LAYOUT, MIGRATE, PURGE, REQUEUE, SETTLE, SUBMIT, TAKE

__all__ = ["QueueDurabilityError", "QueueUnavailableError", "RedisTaskBackend"]

Durability = Literal["require", "warn"]

_SETTABLE = frozenset(TaskRecord.model_fields) - {"id"}
_SETTLE_COLUMNS = {
    "attempts": 0,
    "run_at": 1,
    "lease_owner": 2,
    "lease_expires_at": 3,
    "result": 4,
    "last_error": 5,
    "finished_at": 6,
}
"""The columns a settle sends, by position (``updated_at`` is always now; ``status`` apart);
a settle of any other column changes nothing more on Redis than the ones listed."""
_STATUSES = ("queued", "succeeded", "dead")  # those with an index of their own (leased: P:leases)

_CHUNK = 256
"""Tasks per SUBMIT call: bigger batches go as several calls at once, on as many connections."""
_DIRECT = 16
"""A ``submit_many`` of this many tasks or more is sent as one call of its own (a producer's
batch overlaps the others' instead of waiting for a shared round); fewer are grouped."""
_MIGRATE_CHUNK = 500


_Pending = tuple[list[str], list[str], int, "asyncio.Future[list[Any]]"]
"""A grouped submit waiting for its round: its ``MSET`` items, its SUBMIT arguments, its
task count, its callers' future."""


class QueueUnavailableError(RuntimeError):
    """The queue's broker cannot be reached (or its URL is unusable)."""


class QueueDurabilityError(RuntimeError):
    """The broker would acknowledge tasks it could lose (see ``durability``)."""


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _enc(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is datetime:
        return f'"{value.isoformat()}"'
    return json.dumps(value)


def _loads(raw: bytes) -> Any:
    """JSON written by the scripts (``loads_exact``: orjson where it is exact)."""
    return loads_exact(raw)


def _doc(rec: bytes, fixed: bytes) -> bytes:
    """A task's strings (``P:t:<id>`` and ``P:f:<id>``, ``_redis_lua``) as one JSON document."""
    v = rec.split(b"\n", 9)
    return (
        b'{"status":%b,"attempts":%b,"run_at":%b,"lease_owner":%b,"lease_expires_at":%b,'
        b'"result":%b,"last_error":%b,"updated_at":%b,"finished_at":%b,%b'
        % (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], fixed[1:])
    )


def _record(rec: bytes, fixed: bytes) -> TaskRecord:
    return TaskRecord.model_validate_json(_doc(rec, fixed))


_TIMES = ("run_at", "lease_expires_at", "created_at", "updated_at", "finished_at")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTaskBackend:
    """``TaskBackend`` on Redis Streams; see the module documentation. Build it with
    ``open``. ``clock`` gives epoch seconds [``time.time``]."""

    commits_audit = False  # Redis holds the task: its audit rows go to the store after it
    settles_behind = 0  # acks and the next take share one round trip

    def __init__(
        self,
        client: Any,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "{netsuke}:q",
    ) -> None:
        self.client = client
        self.clock = clock
        self.prefix = prefix
        self._submit = client.register_script(SUBMIT)
        self._take = client.register_script(TAKE)
        self._settle = client.register_script(SETTLE)
        self._extend = client.register_script(EXTEND)
        self._requeue = client.register_script(REQUEUE)
        self._purge = client.register_script(PURGE)
        self._submits: list[_Pending] = []
        self._submitter: asyncio.Task[None] | None = None
        self._shapes: dict[tuple[Any, ...], str] = {}  # submit: shared fields, as JSON
        self._routes: dict[tuple[int, str, tuple[str, ...]], tuple[str, str]] = {}
        self._holders: dict[str, str] = {}  # consumer: as JSON
        self.submit_batches = 0
        """Rounds of SUBMIT calls sent (``tasks / submit_batches``: how many shared one)."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "{netsuke}:q",
        durability: Durability = "require",
    ) -> RedisTaskBackend:
        """Connect to ``url`` (``redis://`` or ``rediss://``), check persistence, bring the
        layout up to date, return the backend. ``QueueUnavailableError`` /
        ``QueueDurabilityError`` otherwise."""
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise QueueUnavailableError(
                "the Redis queue needs redis-py: pip install 'netsuke[redis]'"
            ) from None
        try:
            # a blocking pool: concurrent submits and workers wait for a connection
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=64, timeout=30, socket_connect_timeout=5
            )
            client = aioredis.Redis(connection_pool=pool)
        except ValueError as exc:
            raise QueueUnavailableError(f"bad Redis URL: {exc}") from None
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            await pool.aclose()
            raise QueueUnavailableError(
                f"cannot reach Redis at {_redact(url)}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            await check_durability(client, url, durability)
            backend = cls(client, clock=clock, prefix=prefix)
            await backend._upgrade()
            for script in (SUBMIT, TAKE, SETTLE):  # (a first SUBMIT round would rerun its MSET)
                await client.script_load(script)
        except BaseException:
            await client.aclose()
            await pool.aclose()
            raise
        return backend

    async def _upgrade(self) -> None:
        """Set the layout version of a new queue; bring a queue of layout 1 or 2 to 3 in place
        (1: each task hash becomes two strings; 2: already valid layout 3, the version only)."""
        p = self.prefix
        version = await self.client.get(f"{p}:v")
        if version is not None and int(version) > LAYOUT:
            raise QueueUnavailableError(
                f"the queue {p} has key layout {int(version)}; this Netsuke reads layout "
                f"{LAYOUT}: upgrade Netsuke"
            )
        if version is not None and int(version) == LAYOUT:
            return
        converted = 0
        if version is None:
            if not await self.client.exists(f"{p}:all"):  # a new queue
                await self.client.set(f"{p}:v", str(LAYOUT), nx=True)
                return
            migrate = self.client.register_script(MIGRATE)  # layout 1 to 2
            while n := int(await migrate(args=[p, _MIGRATE_CHUNK])):
                converted += n
        # layout 2 to 3: the strings stay; only new tasks may have an empty entry line
        await self.client.set(f"{p}:v", str(LAYOUT))
        log.warning("queue.redis_layout_upgraded", prefix=p, tasks=converted, layout=LAYOUT,
                    was=1 if version is None else int(version))  # fmt: skip

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _route(self, draft: TaskDraft) -> tuple[str, str]:
        """The member of ``P:routes`` of ``draft``'s stream, and the last lines of a task's
        string for it: line 14 (the stream key's length in bytes) and the key (``_redis_lua``)."""
        key = (draft.priority, draft.kind, draft.capabilities)
        got = self._routes.get(key)
        if got is None:
            member = f"{draft.priority}|{draft.kind}|{' '.join(sorted(draft.capabilities))}"
            stream = f"{self.prefix}:r:{member}"
            got = member, f"{len(stream.encode())}\n{stream}"
            if len(self._routes) > 256:
                self._routes.clear()
            self._routes[key] = got
        return got

    def _submit_parts(
        self,
        draft: TaskDraft,
        task_id: str,
        created: str,
        now_ms: str,
        times: dict[datetime, tuple[str, str]],
        writes: list[str],
        args: list[str],
    ) -> None:
        """Add ``draft`` (the new task ``task_id``) to a SUBMIT round: its two strings, whole,
        to ``writes`` (the ``MSET`` before the script: key, value, key, value) and its five
        arguments to ``args`` (``_redis_lua``); ``created``: the batch's time in ISO format
        (``times``: its timestamps, ISO and ms), ``now_ms`` in ms."""
        shape = (draft.kind, draft.capabilities, draft.priority, draft.max_attempts,
                 draft.backoff_base, draft.backoff_cap, draft.timeout)  # fmt: skip
        common = self._shapes.get(shape)
        if common is None:  # the fields a batch's tasks share, encoded once
            common = json.dumps({
                "kind": draft.kind,
                "capabilities": list(draft.capabilities),
                "priority": draft.priority,
                "max_attempts": draft.max_attempts,
                "backoff_base": draft.backoff_base,
                "backoff_cap": draft.backoff_cap,
                "timeout": draft.timeout,
            }, separators=(",", ":"))[1:-1]  # fmt: skip
            if len(self._shapes) > 256:
                self._shapes.clear()
            self._shapes[shape] = common
        key = draft.idempotency_key
        payload = draft.payload_json or json.dumps(draft.payload)  # (the queue encoded it)
        member, stream = self._route(draft)
        run_at = draft.run_at
        got = times.get(run_at)
        if got is None:
            got = times[run_at] = run_at.isoformat(), str(_ms(run_at))
        when, run_ms = got
        p = self.prefix
        writes += (
            f"{p}:t:{task_id}",
            # lines 1-14 (the entry '': the script's XADD gives it; the holder '') and the key
            f'"queued"\n0\n"{when}"\nnull\nnull\nnull\nnull\n"{created}"\nnull\n0\n\n'
            f"{now_ms}\n\n{stream}",
            f"{p}:f:{task_id}",
            f'{{"id":"{task_id}",{common},"idempotency_key":'
            f'{"null" if key is None else json.dumps(key)},"created_at":"{created}",'
            f'"payload":{payload}}}',
        )
        args += (task_id, now_ms, run_ms, key or "", member)

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]:
        [got] = await self.submit_many([draft])
        return got

    async def submit_many(self, drafts: Sequence[TaskDraft]) -> list[tuple[TaskRecord, bool]]:
        """Submit ``drafts`` in one SUBMIT round (with the submits made at the same time: one
        round trip and, with ``appendfsync always``, one fsync for all); each ``(task,
        created)`` once Redis has applied, and fsynced, it. A duplicate idempotency key gives
        the first task and ``False``."""
        if not drafts:
            return []
        now = self.now()
        created = now.isoformat()
        now_ms = str(_ms(now))
        ids = new_ids(len(drafts))
        times = {now: (created, now_ms)}
        writes: list[str] = []
        args: list[str] = []
        part = self._submit_parts
        for draft, task_id in zip(drafts, ids, strict=True):
            part(draft, task_id, created, now_ms, times, writes, args)
        if len(drafts) >= _DIRECT:  # a batch already: its own call, overlapping the others'
            replies = await self._submit_round(writes, args)
            self.submit_batches += 1
        else:
            replies = await self._submit_grouped(writes, args, len(drafts))
        out: list[tuple[TaskRecord, bool]] = []
        for reply, draft, task_id in zip(replies, drafts, ids, strict=True):
            if type(reply) is int:
                out.append((trusted_task(draft.new_record(task_id, now)), True))
            else:  # a duplicate: the first task's id
                out.append((await self.get(_s(reply)), False))
        return out

    async def _submit_round(self, writes: list[str], args: list[str]) -> list[Any]:
        """The ``MSET`` of the new tasks' strings (``writes``) and the SUBMIT script (``args``)
        in one ``MULTI`` (atomic: a task is never seen half written, nor written without its
        entry); the script's replies. A script lost by a restart of Redis is loaded again and
        the round rerun (its ``MSET`` rewrites the same strings)."""
        from redis.exceptions import NoScriptError  # (redis-py: an optional extra)

        mset = ("MSET", *writes)
        script = ("EVALSHA", self._submit.sha, 0, self.prefix, *args)
        replies = await self._transaction(mset, script)
        if isinstance(replies[1], NoScriptError):
            await self.client.script_load(SUBMIT)
            replies = await self._transaction(mset, script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        result: list[Any] = replies[1]
        return result

    async def _transaction(self, *commands: tuple[Any, ...]) -> list[Any]:
        """``commands`` in one ``MULTI``/``EXEC`` on a connection of the pool; ``EXEC``'s
        reply (a command's error is its item). Packed by hiredis in one C call each, not by
        redis-py's pipeline, whose encoder is a Python call per argument (~0.4 µs: ~10 per
        submitted task here)."""
        from hiredis import pack_command  # (redis-py's C extra, with it)

        packed = b"".join([pack_command(c) for c in (("MULTI",), *commands, ("EXEC",))])
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            for _ in range(len(commands) + 1):
                await conn.read_response()  # +OK, +QUEUED (an error: raised, and EXECABORT)
            replies: list[Any] = await conn.read_response()
        except BaseException:
            await conn.disconnect()  # (replies may be left unread on it)
            raise
        finally:
            await pool.release(conn)
        return replies

    async def _submit_grouped(self, writes: list[str], args: list[str], count: int) -> list[Any]:
        """Run the SUBMIT round for ``count`` tasks (``writes``, ``args``: ``_submit_parts``)
        with the submits made in the same turn of the loop (one round trip and, with
        ``appendfsync always``, one fsync for all); the replies of these tasks once Redis has
        applied them."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._submits.append((writes, args, count, done))
        if self._submitter is None or self._submitter.done():
            self._submitter = asyncio.create_task(self._submit_batches())
        return await done

    async def _submit_batches(self) -> None:
        while self._submits:
            await asyncio.sleep(0)  # let the submits of this turn of the loop join
            batch, self._submits = self._submits, []
            self.submit_batches += 1
            # calls of up to _CHUNK tasks, sent at once on as many connections
            calls: list[list[_Pending]] = [[]]
            size = 0
            for item in batch:
                if size >= _CHUNK and calls[-1]:
                    calls.append([])
                    size = 0
                calls[-1].append(item)
                size += item[2]
            await asyncio.gather(*(self._submit_call(call) for call in calls))

    async def _submit_call(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                replies = await self._submit_round(batch[0][0], batch[0][1])
            else:
                writes: list[str] = []
                args: list[str] = []
                for w, a, _, _ in batch:
                    writes += w
                    args += a
                replies = await self._submit_round(writes, args)
        except BaseException as exc:
            for _, _, _, done in batch:
                if not done.done():
                    done.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for _, _, count, done in batch:
            if not done.done():
                done.set_result(replies[at : at + count])
            at += count

    async def take(
        self,
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> list[TaskRecord]:
        if limit <= 0:
            return []
        return self._taken(
            await self._take(args=self._take_args(consumer, capabilities, limit, lease, kinds))
        )

    def _holder(self, consumer: str) -> str:
        """``consumer`` as JSON (the lease holder in a task's string)."""
        got = self._holders.get(consumer)
        if got is None:
            if len(self._holders) > 1024:
                self._holders.clear()
            got = self._holders[consumer] = json.dumps(consumer)
        return got

    def _take_args(
        self,
        consumer: str,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None,
    ) -> list[Any]:
        """The TAKE script's arguments: it picks the fitting streams itself (one round trip)."""
        now = self.now()
        expires = now + timedelta(seconds=lease)
        if capabilities is None:
            offered, capable_only = "*", "0"
        else:
            offered = " ".join(sorted(c for c in capabilities if c != CAPABLE_ONLY))
            capable_only = "1" if CAPABLE_ONLY in capabilities else "0"
        return [
            self.prefix,
            consumer,
            _ms(now),
            _ms(expires),
            _enc(expires),
            _enc(now),
            self._holder(consumer),
            limit,
            offered,
            capable_only,
            "*" if kinds is None else " ".join(kinds),
        ]

    @staticmethod
    def _taken(rows: list[bytes]) -> list[TaskRecord]:
        """The TAKE script's reply (per leased task its two strings, ``P:t:<id>`` and
        ``P:f:<id>``, written by this backend's scripts: every field present and well typed) as
        records, spliced into one JSON array read in one parse without pydantic's validation
        of each."""
        if not rows:
            return []
        tasks: list[TaskRecord] = []
        parse = datetime.fromisoformat
        pairs = zip(rows[::2], rows[1::2], strict=True)
        docs = b",".join([_doc(rec, fixed) for rec, fixed in pairs])
        for data in _loads(b"[" + docs + b"]"):
            for name in _TIMES:
                value = data[name]
                if value is not None:
                    data[name] = parse(value)
            tasks.append(trusted_task(data))  # (the document has exactly the record's fields)
        tasks.sort(key=lambda t: (-t.priority, t.run_at, t.created_at))
        return tasks

    async def settle(self, change: Settle) -> bool:
        now = self.now()
        args = [self.prefix, self._holder(change[0]), _ms(now), _enc(now), self._settle_arg(change)]
        [applied] = await self._settle(args=args)
        return bool(applied)

    @staticmethod
    def _settle_arg(change: Settle) -> str:
        """One task's settle for the SETTLE script's argument (10 lines): id, new status,
        run_at (ms, 0: none), and the JSON values of ``_SETTLE_COLUMNS`` ('': kept)."""
        _, task_id, values = change
        columns = ["", "", "", "", "", "", ""]
        status = "leased"
        run_ms = 0
        for name, value in values.items():
            at = _SETTLE_COLUMNS.get(name)
            if at is not None:
                columns[at] = "null" if value is None else _enc(value)
                if at == 1 and type(value) is datetime:
                    run_ms = _ms(value)
            elif name == "status":
                status = value
            elif name not in _SETTABLE:
                unknown = sorted(set(values) - _SETTABLE)
                raise ValidationError("values", f"not settable task columns: {unknown}")
        return f"{task_id}\n{status}\n{run_ms}\n{chr(10).join(columns)}\n"

    async def settle_and_take(
        self,
        changes: Sequence[Settle],
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[TaskRecord]]:
        """The settles (one SETTLE call), then the take, in one pipeline (one round trip;
        Redis applies them together and, with ``appendfsync always``, fsyncs them before
        answering): each settle is durable on return. A take failing after them is logged and
        returns no tasks; a failed settle raises (the worker keeps its acks for the next
        round)."""
        if not changes:
            return [], await self.take(
                consumer, capabilities=capabilities, limit=limit, lease=lease, kinds=kinds
            )
        now = self.now()
        stamp = _enc(now)
        now_ms = _ms(now)
        groups: dict[str, list[int]] = {}  # (one SETTLE call per consumer: the worker's own)
        for i, change in enumerate(changes):
            groups.setdefault(change[0], []).append(i)
        # EVALSHA in the pipeline itself: a pipeline of Script calls first asks SCRIPT EXISTS
        # (a round trip more); a script missing (Redis restarted) is run again on its own
        from redis.exceptions import NoScriptError  # (redis-py: an optional extra)

        pipe = self.client.pipeline(transaction=False)
        arg = self._settle_arg
        calls: list[list[Any]] = []
        for holder, indices in groups.items():
            settles = "".join([arg(changes[i]) for i in indices])
            calls.append([self.prefix, self._holder(holder), now_ms, stamp, settles])
            pipe.evalsha(self._settle.sha, 0, *calls[-1])
        take: list[Any] = []
        if limit > 0:
            take = self._take_args(consumer, capabilities, limit, lease, kinds)
            pipe.evalsha(self._take.sha, 0, *take)
        replies = await pipe.execute(raise_on_error=False)
        applied = [False] * len(changes)
        for (_, indices), reply, args in zip(groups.items(), replies, calls, strict=False):
            if isinstance(reply, NoScriptError):
                reply = await self._settle(args=args)
            if isinstance(reply, Exception):
                raise reply
            for i, ok in zip(indices, reply, strict=True):
                applied[i] = bool(ok)
        if limit <= 0:
            return applied, []
        rows = replies[len(groups)]
        if isinstance(rows, NoScriptError):
            try:
                rows = await self._take(args=take)
            except Exception as exc:
                rows = exc
        if isinstance(rows, Exception):
            log.warning("worker.take_failed", worker=consumer, error=repr(rows))
            return applied, []
        return applied, self._taken(rows)

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int:
        if not task_ids:
            return 0
        now = self.now()
        expires = now + timedelta(seconds=lease)
        args = [self.prefix, consumer, self._holder(consumer), _ms(now), _ms(expires),
                _enc(expires), *task_ids]  # fmt: skip
        return int(await self._extend(args=args))

    async def get(self, task_id: str) -> TaskRecord:
        rec, fixed = await self.client.mget(
            f"{self.prefix}:t:{task_id}", f"{self.prefix}:f:{task_id}"
        )
        if not rec or not fixed:
            raise TaskNotFoundError(task_id)
        return _record(rec, fixed)

    async def _ids(self, status: TaskStatus | None, start: int, stop: int) -> list[str]:
        """Ids of tasks of ``status`` (``None``: any), oldest first, from ``start`` to before
        ``stop`` (UUIDv7 ids: their order is the order of creation). Leased tasks are those of
        ``P:leases``, ordered here (as many as are leased: bounded by the workers)."""
        p = self.prefix
        if status is not None and status != "leased":
            return [_s(i) for i in await self.client.zrange(f"{p}:s:{status}", start, stop - 1)]
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(f"{p}:leases", 0, -1)
        if status is None:
            for s in _STATUSES:
                pipe.zrange(f"{p}:s:{s}", 0, stop - 1)
        ids = sorted({_s(i) for got in await pipe.execute() for i in got})
        return ids[start:stop]

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        id_prefix: str | None = None,
    ) -> Page[TaskRecord]:
        check_page(limit, offset)
        wanted = offset + limit + 1
        found: list[TaskRecord] = []
        start = 0
        chunk = 500
        while len(found) < wanted:
            ids = await self._ids(status, start, start + chunk)
            if not ids:
                break
            start += chunk
            if id_prefix is not None:
                ids = [i for i in ids if i.startswith(id_prefix)]
            if not ids:
                continue
            p = self.prefix
            got = await self.client.mget([k for i in ids for k in (f"{p}:t:{i}", f"{p}:f:{i}")])
            for rec, fixed in zip(got[::2], got[1::2], strict=True):
                if not rec or not fixed:
                    continue
                task = _record(rec, fixed)
                if kind is None or task.kind == kind:
                    found.append(task)
        page = found[offset : offset + limit]
        more = len(found) > offset + limit
        return Page(items=page, next_cursor=str(offset + limit) if more else None)

    async def count(self, status: TaskStatus | None = None) -> int:
        p = self.prefix
        if status is not None:
            key = f"{p}:leases" if status == "leased" else f"{p}:s:{status}"
            return int(await self.client.zcard(key))
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(f"{p}:leases")
        for s in _STATUSES:
            pipe.zcard(f"{p}:s:{s}")
        return sum(int(n) for n in await pipe.execute())

    async def requeue(self, task_id: str) -> TaskRecord:
        now = _enc(self.now())
        # lines 2-9: attempts, run_at, lease_owner, lease_expires_at, result (kept),
        # last_error (kept), updated_at, finished_at
        args = [self.prefix, task_id, "0", now, "null", "null", "", "", now, "null"]
        doc = await self._requeue(args=args)
        if not doc:
            raise TaskNotFoundError(task_id, "dead")
        return TaskRecord.model_validate_json(doc)  # as requeued (a worker may take it at once)

    async def purge(self, status: TaskStatus, *, ids: Sequence[str] | None = None) -> int:
        if status not in ("dead", "succeeded"):
            raise TaskValidationError("status", "only dead or succeeded tasks can be purged")
        if ids is None:
            ids = [_s(i) for i in await self.client.zrange(f"{self.prefix}:s:{status}", 0, -1)]
        n = 0
        for i in range(0, len(ids), 500):
            n += int(await self._purge(args=[self.prefix, status, *ids[i : i + 500]]))
        return n

    async def next_due(self) -> datetime | None:
        pipe = self.client.pipeline(transaction=False)  # (one round trip for both)
        for key in (f"{self.prefix}:delayed", f"{self.prefix}:leases"):
            pipe.zrange(key, 0, 0, withscores=True)
        times = [float(first[0][1]) for first in await pipe.execute() if first]
        return datetime.fromtimestamp(min(times) / 1000, UTC) if times else None

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.aclose()


def _redact(url: str) -> str:
    """``url`` without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


async def check_durability(client: Any, url: str, durability: Durability) -> None:
    """Refuse (``require``) or log an error (``warn``) unless Redis fsyncs every write."""
    try:
        aof = await client.config_get("appendonly")
        fsync = await client.config_get("appendfsync")
        appendonly = _s(aof.get("appendonly", aof.get(b"appendonly", "")))
        appendfsync = _s(fsync.get("appendfsync", fsync.get(b"appendfsync", "")))
    except Exception as exc:
        appendonly = appendfsync = f"unknown ({type(exc).__name__})"
    if appendonly == "yes" and appendfsync == "always":
        log.info("queue.redis_durable", url=_redact(url))
        return
    problem = (
        f"Redis at {_redact(url)} has appendonly {appendonly}, appendfsync {appendfsync}: "
        "acknowledged tasks can be lost on a crash; set `appendonly yes` and "
        "`appendfsync always`"
    )
    if durability == "require":
        raise QueueDurabilityError(f"{problem} (or accept the risk with ?durability=warn)")
    log.error("queue.redis_not_durable", url=_redact(url), problem=problem)
