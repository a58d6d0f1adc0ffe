"""The Redis Streams backend: tasks in Redis, delivered through consumer groups.

``await RedisTaskBackend.open("redis://host:6379/0")`` connects, checks the server's
persistence and loads the scripts. Semantics are the ``TaskBackend`` contract (the same
conformance tests as the SQL backend), mapped onto Redis:

* **Submit** is one Lua script: the task hash, the idempotency key (``SET`` of the key; a
  duplicate returns the first task) and, when due, an ``XADD`` to the ready stream of its
  priority, kind and capabilities (``P:r:<priority>|<kind>|<caps>``); a delayed task waits in a
  sorted set by ``run_at`` and is moved to its stream by the first ``take`` after it is due.
  The reply comes after Redis has applied the script, and with ``appendfsync always`` after
  it is fsynced: acknowledged means durable.
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
* **Settle** (ack, retry with a later ``run_at``, dead letter) is one script that checks the
  lease, then ``XACK``s and ``XDEL``s the entry; a retry is a new entry when it is due.

Durability: ``durability="require"`` [default] refuses to open unless the server has
``appendonly yes`` and ``appendfsync always`` (``QueueDurabilityError``); ``"warn"`` opens
and logs an error (acknowledged tasks may be lost on a crash of the Redis host). A server
that refuses ``CONFIG GET`` (managed Redis) is reported and, with ``require``, refused.
All keys share one hash tag (the prefix ``{netsuke}:q``), so the scripts run in one slot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from netsuke.store import CAPABLE_ONLY, Page, TaskDraft, TaskRecord, TaskStatus, ValidationError
from netsuke.store import new_id as _new_id
from netsuke.store._records_tasks import trusted_task

from ._backend import Settle
from ._errors import TaskNotFoundError, TaskValidationError, check_page
from ._observe import log
from ._redis_lua import EXTEND, PURGE, REQUEUE, SETTLE, SUBMIT, TAKE

__all__ = ["QueueDurabilityError", "QueueUnavailableError", "RedisTaskBackend"]

Durability = Literal["require", "warn"]

_MUTABLE = (
    "status",
    "attempts",
    "run_at",
    "lease_owner",
    "lease_expires_at",
    "result",
    "last_error",
    "updated_at",
    "finished_at",
)
_SETTABLE = frozenset(TaskRecord.model_fields) - {"id"}


_CHUNK = 256
"""Tasks per SUBMIT call: bigger batches go as several calls at once, on as many connections."""
_DIRECT = 16
"""A ``submit_many`` of this many tasks or more is sent as one call of its own (a producer's
batch overlaps the others' instead of waiting for a shared round); fewer are grouped."""


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


def _record(flat: Sequence[Any] | Mapping[Any, Any]) -> TaskRecord:
    if isinstance(flat, Mapping):
        pairs = {_s(k): _s(v) for k, v in flat.items()}
    else:
        pairs = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
    # ``j`` is a JSON object and each changing column a JSON value: splice them into one
    # document and let pydantic parse it once
    parts = [pairs["j"][:-1]]
    for name in _MUTABLE:
        if name in pairs:
            parts.append(f',"{name}":{pairs[name]}')
    parts.append("}")
    return TaskRecord.model_validate_json("".join(parts))


_TIMES = ("run_at", "lease_expires_at", "created_at", "updated_at", "finished_at")
_FIELDS = tuple(TaskRecord.model_fields)  # (a record's __dict__ keeps the fields' order)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTaskBackend:
    """``TaskBackend`` on Redis Streams; see the module documentation. Build it with
    ``open``. ``clock`` gives epoch seconds [``time.time``]."""

    commits_audit = False  # Redis holds the task: its audit rows go to the store after it

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
        self._submits: list[tuple[list[list[Any]], int, asyncio.Future[list[Any]]]] = []
        self._submitter: asyncio.Task[None] | None = None
        self._shapes: dict[tuple[Any, ...], str] = {}  # submit: shared fields, as JSON
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
        """Connect to ``url`` (``redis://`` or ``rediss://``), check persistence, return the
        backend. ``QueueUnavailableError`` / ``QueueDurabilityError`` otherwise."""
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
        except BaseException:
            await client.aclose()
            await pool.aclose()
            raise
        return cls(client, clock=clock, prefix=prefix)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _stream(self, priority: int, kind: str, capabilities: Sequence[str]) -> tuple[str, str]:
        member = f"{priority}|{kind}|{' '.join(sorted(capabilities))}"
        return f"{self.prefix}:r:{member}", member

    def _submit_args(
        self, draft: TaskDraft, now: datetime, times: dict[datetime, str]
    ) -> tuple[list[Any], TaskRecord]:
        """The SUBMIT script's arguments for ``draft`` (9), and the record it makes;
        ``times``: the batch's timestamps in ISO format, ``now`` first."""
        created = times[now]
        task_id = _new_id()
        caps = list(draft.capabilities)
        shape = (draft.kind, draft.capabilities, draft.priority, draft.max_attempts,
                 draft.backoff_base, draft.backoff_cap, draft.timeout)  # fmt: skip
        common = self._shapes.get(shape)
        if common is None:  # the fields a batch's tasks share, encoded once
            common = json.dumps({
                "kind": draft.kind,
                "capabilities": caps,
                "priority": draft.priority,
                "max_attempts": draft.max_attempts,
                "backoff_base": draft.backoff_base,
                "backoff_cap": draft.backoff_cap,
                "timeout": draft.timeout,
            })[1:-1]  # fmt: skip
            if len(self._shapes) > 256:
                self._shapes.clear()
            self._shapes[shape] = common
        key = draft.idempotency_key
        payload = draft.payload_json or json.dumps(draft.payload)  # (the queue encoded it)
        text = (f'{{"id": "{task_id}", {common}, "idempotency_key": '
                f'{"null" if key is None else json.dumps(key)}, "created_at": "{created}", '
                f'"payload": {payload}}}')  # fmt: skip
        stream, member = self._stream(draft.priority, draft.kind, caps)
        run_at = draft.run_at
        when = times.get(run_at)
        if when is None:
            when = times[run_at] = run_at.isoformat()
        args = [task_id, key or "", text, str(_ms(now)), str(_ms(run_at)), stream, member,
                f'"{when}"', f'"{created}"']  # fmt: skip
        record = trusted_task({
            "id": task_id,
            "kind": draft.kind,
            "payload": draft.payload,
            "capabilities": caps,
            "priority": draft.priority,
            "status": "queued",
            "attempts": 0,
            "max_attempts": draft.max_attempts,
            "backoff_base": draft.backoff_base,
            "backoff_cap": draft.backoff_cap,
            "timeout": draft.timeout,
            "run_at": run_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "idempotency_key": draft.idempotency_key,
            "result": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
        })  # fmt: skip
        return args, record

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]:
        [got] = await self.submit_many([draft])
        return got

    async def submit_many(self, drafts: Sequence[TaskDraft]) -> list[tuple[TaskRecord, bool]]:
        """Submit ``drafts`` in one SUBMIT call (with the submits made at the same time: one
        round trip and, with ``appendfsync always``, one fsync for all); each ``(task,
        created)`` once Redis has applied, and fsynced, it. A duplicate idempotency key gives
        the first task and ``False``."""
        if not drafts:
            return []
        now = self.now()
        args: list[list[Any]] = []
        records: list[TaskRecord] = []
        times = {now: now.isoformat()}
        for draft in drafts:
            part, record = self._submit_args(draft, now, times)
            args.append(part)
            records.append(record)
        if len(drafts) >= _DIRECT:  # a batch already: its own call, overlapping the others'
            replies = await self._submit(args=[self.prefix, json.dumps(args, ensure_ascii=False)])
            self.submit_batches += 1
        else:
            replies = await self._submit_grouped(args, len(drafts))
        out: list[tuple[TaskRecord, bool]] = []
        for i, record in enumerate(records):
            if int(replies[2 * i]) == 0:
                out.append((await self.get(_s(replies[2 * i + 1])), False))
            else:
                out.append((record, True))
        return out

    async def _submit_grouped(self, args: list[list[Any]], count: int) -> list[Any]:
        """Run the SUBMIT script for ``count`` tasks' ``args``, in one call with the submits
        made in the same turn of the loop (one round trip and, with ``appendfsync always``,
        one fsync for all); the replies of these tasks once Redis has applied them."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._submits.append((args, count, done))
        if self._submitter is None or self._submitter.done():
            self._submitter = asyncio.create_task(self._submit_batches())
        return await done

    async def _submit_batches(self) -> None:
        while self._submits:
            await asyncio.sleep(0)  # let the submits of this turn of the loop join
            batch, self._submits = self._submits, []
            self.submit_batches += 1
            # calls of up to _CHUNK tasks, sent at once on as many connections
            calls: list[list[tuple[list[list[Any]], int, asyncio.Future[list[Any]]]]] = [[]]
            size = 0
            for item in batch:
                if size >= _CHUNK and calls[-1]:
                    calls.append([])
                    size = 0
                calls[-1].append(item)
                size += item[1]
            await asyncio.gather(*(self._submit_call(call) for call in calls))

    async def _submit_call(
        self, batch: list[tuple[list[list[Any]], int, asyncio.Future[Any]]]
    ) -> None:
        tasks: list[list[Any]] = []
        for part, _, _ in batch:
            tasks += part
        try:
            replies = await self._submit(args=[self.prefix, json.dumps(tasks, ensure_ascii=False)])
        except BaseException as exc:
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for _, count, done in batch:
            if not done.done():
                done.set_result(replies[at : at + 2 * count])
            at += 2 * count

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
            json.dumps(consumer),
            limit,
            offered,
            capable_only,
            "*" if kinds is None else " ".join(kinds),
        ]

    @staticmethod
    def _taken(rows: Any) -> list[TaskRecord]:
        """The TAKE script's reply (one JSON array of the leased tasks, written by this
        backend's scripts from values it wrote: every field present and well typed) as records,
        without pydantic's validation of each."""
        tasks: list[TaskRecord] = []
        parse = datetime.fromisoformat
        for data in json.loads(rows):
            for name in _TIMES:
                value = data[name]
                if value is not None:
                    data[name] = parse(value)
            tasks.append(trusted_task({name: data.get(name) for name in _FIELDS}))
        tasks.sort(key=lambda t: (-t.priority, t.run_at, t.created_at))
        return tasks

    async def settle(self, change: Settle) -> bool:
        now = self.now()
        args = [
            self.prefix,
            change[0],
            _ms(now),
            json.dumps([self._settle_args(change, _enc(now))], ensure_ascii=False),
        ]
        [applied] = await self._settle(args=args)
        return bool(applied)

    def _settle_args(self, change: Settle, now_json: str) -> list[Any]:
        """One task's settle for the SETTLE script: id, new status, run_at (ms, 0: none), and
        the columns to set with their JSON values, flat (``updated_at``: ``now_json``)."""
        _, task_id, values = change
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValidationError("values", f"not settable task columns: {sorted(unknown)}")
        run_at = values.get("run_at")
        columns: list[str] = []
        for name, value in values.items():
            if name != "updated_at":
                columns += [name, _enc(value)]
        columns += ["updated_at", now_json]
        return [
            task_id,
            values.get("status", "leased"),
            _ms(run_at) if isinstance(run_at, datetime) else 0,
            columns,
        ]

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
        groups: dict[str, list[int]] = {}  # (one SETTLE call per consumer: the worker's own)
        for i, change in enumerate(changes):
            groups.setdefault(change[0], []).append(i)
        pipe = self.client.pipeline(transaction=False)
        for holder, indices in groups.items():
            settles = [self._settle_args(changes[i], stamp) for i in indices]
            await self._settle(
                args=[self.prefix, holder, _ms(now), json.dumps(settles, ensure_ascii=False)],
                client=pipe,
            )
        if limit > 0:
            take = self._take_args(consumer, capabilities, limit, lease, kinds)
            await self._take(args=take, client=pipe)
        replies = await pipe.execute(raise_on_error=False)
        applied = [False] * len(changes)
        for (_, indices), reply in zip(groups.items(), replies, strict=False):
            if isinstance(reply, Exception):
                raise reply
            for i, ok in zip(indices, reply, strict=True):
                applied[i] = bool(ok)
        if limit <= 0:
            return applied, []
        rows = replies[len(groups)]
        if isinstance(rows, Exception):
            log.warning("worker.take_failed", worker=consumer, error=repr(rows))
            return applied, []
        return applied, self._taken(rows)

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int:
        if not task_ids:
            return 0
        now = self.now()
        expires = now + timedelta(seconds=lease)
        args = [self.prefix, consumer, _ms(now), _ms(expires), _enc(expires), *task_ids]
        return int(await self._extend(args=args))

    async def get(self, task_id: str) -> TaskRecord:
        flat = await self.client.hgetall(f"{self.prefix}:t:{task_id}")
        if not flat:
            raise TaskNotFoundError(task_id)
        return _record(flat)

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
        key = f"{self.prefix}:s:{status}" if status is not None else f"{self.prefix}:all"
        wanted = offset + limit + 1
        found: list[TaskRecord] = []
        start = 0
        chunk = 500
        while len(found) < wanted:
            ids = [_s(i) for i in await self.client.zrange(key, start, start + chunk - 1)]
            if not ids:
                break
            start += chunk
            ids.sort()  # UUIDv7: creation order within equal milliseconds too
            if id_prefix is not None:
                ids = [i for i in ids if i.startswith(id_prefix)]
            if not ids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(f"{self.prefix}:t:{i}")
            for flat in await pipe.execute():
                if not flat:
                    continue
                task = _record(flat)
                if kind is None or task.kind == kind:
                    found.append(task)
        page = found[offset : offset + limit]
        more = len(found) > offset + limit
        return Page(items=page, next_cursor=str(offset + limit) if more else None)

    async def count(self, status: TaskStatus | None = None) -> int:
        key = f"{self.prefix}:s:{status}" if status is not None else f"{self.prefix}:all"
        return int(await self.client.zcard(key))

    async def requeue(self, task_id: str) -> TaskRecord:
        now = self.now()
        values: dict[str, Any] = {
            "status": "queued",
            "attempts": 0,
            "run_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": None,
            "updated_at": now,
        }
        args: list[Any] = [self.prefix, task_id, _ms(now)]
        for name, value in values.items():
            args += [name, _enc(value)]
        row = await self._requeue(args=args)
        if not row:
            raise TaskNotFoundError(task_id, "dead")
        return _record(row)  # as requeued (a worker may take it at once)

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
        times: list[float] = []
        for key in (f"{self.prefix}:delayed", f"{self.prefix}:leases"):
            first = await self.client.zrange(key, 0, 0, withscores=True)
            if first:
                times.append(float(first[0][1]))
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
