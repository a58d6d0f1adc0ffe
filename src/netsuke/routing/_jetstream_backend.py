"""The NATS JetStream backend: deliveries through work streams, task records in KV buckets.

``await JetStreamTaskBackend.open("nats://host:4222")`` connects, creates (or binds) its streams
and checks durability. Semantics are the ``TaskBackend`` contract (the same conformance tests as
the SQL and Redis backends), mapped onto JetStream. Names below use the prefix ``P`` [``NETSUKE``]
(subjects use it in lower case, ``p``):

* **Records.** Each task is one JSON value (key ``t.<id>``) in one of the KV buckets
  ``P_TASKS_0`` .. ``P_TASKS_3`` (by its id: with ``sync_interval: always`` each stream fsyncs
  on its own, so four buckets write in parallel); every change is a compare-and-set on the key's
  revision, so two backends never both settle a task. Idempotency keys are keys ``i.<sha256>``
  of ``P_TASKS`` created only if absent (``create``); the routes (priority, kind, capabilities,
  max attempts) are its keys ``r.<hash>``, watched by every backend.
* **Deliveries.** The stream ``P_WORK`` (file storage, limits retention; a prefix made before
  2026-12-07 keeps its work-queue retention) holds one message per task on
  ``p.r.<route hash>.<id>``, from submit until compacted after its ack (work-queue retention:
  deleted by the ack); each route has one durable pull consumer shared by every worker
  serving it, highest priority first. ``work_streams`` [``DEFAULT_WORK_STREAMS``, 4, for a
  new prefix] spreads tasks by id over ``P_WORK`` and ``P_WORK_1`` .. (subjects
  ``p.r<k>.<route hash>.<id>``), each route with a consumer on each and a take pulling a
  share from all: with ``sync_interval: always`` a stream fsyncs its writes one at a time (a
  task: its message; with work-queue retention also its ack's tombstone), so one stream's
  rate is bounded by the disk's serial fsync rate; several fsync in parallel. The number is
  recorded with the prefix (``P_TASKS`` key ``cfg.work_streams``; a prefix made before that
  keeps the streams it has): later backends use it, and one asking for another is refused
  (tasks map to streams by id).
* **Submit** publishes the task (the whole record; with an idempotency key ``Nats-Msg-Id`` = its
  id, so a publish made again by a submit finishing an earlier one is stored once within the
  stream's duplicate window; an id made by this submit is never published twice, and goes
  without) and returns on the publish ack, fsynced first when the server runs with
  ``sync_interval: always``. Until a take leases it the message
  *is* the record: ``get`` reads it by subject (direct get), and the first lease creates the KV
  record. A task due later is delivered at once and ``nak``-ed with the delay until it is due.
* **Take** pulls without waiting (``no_wait``; a take finding nothing soon after a publish by
  this process pulls once more, waiting ``_SETTLE_WAIT`` for a first message: the server tells
  a consumer of a new message asynchronously, so a pull right after the publish's ack can miss
  it) from the routes the consumer serves and leases each
  message in its record (owner, expiry on the backend's clock, attempts + 1, the message's ack
  subject), written ``lease_write_delay`` [0.05 s] later unless the task is settled first (then
  one write records lease and result; meanwhile this process answers ``get`` with the lease,
  others see the task ``queued``; a process killed within the delay leaves no lease record: the
  task comes back after ``ack_wait``, the attempt counted from the delivery count). A lease
  shorter or longer than the consumer's ``ack_wait`` is set exactly with ``nak(delay=lease)``
  (the message stays pending: an ack still settles it; without one it is redelivered when the
  lease ends). A
  redelivered message whose record is still leased to another consumer, unexpired, is put back
  until the lease ends; a message whose record moved on (a stale delivery) is acked and
  dropped.
* **Settle** checks the lease and compare-and-sets the record (that is the durable part), then
  acks the message (``succeeded``), ``nak``-s it with the retry's backoff delay (``queued``, the
  same message redelivered when due), or ``term``-s it and publishes the id to the dead-letter
  stream ``P_DEAD`` on ``p.dead`` (``dead``). The ack itself is not waited for: if it is lost the
  message comes back and is dropped as stale. ``settle_and_take`` writes the records of the
  leases it has not written yet together (compare-and-set publishes with their acks
  outstanding, one wait for the lot), then takes; a worker commits up to ``SETTLES_BEHIND``
  [4] such batches in the background (``settles_behind``) while it takes more, so a take
  does not wait for the last batch's fsyncs. **Extend** renews the record's lease and sends
  ``in_progress`` (a lease equal to ``ack_wait``) or ``nak(delay=lease)``.
* **Compaction.** With limits retention an ack deletes nothing (a work-queue ack writes and
  fsyncs a tombstone: a third of a task's fsynced writes, the others its message and its
  record). Every ``compact_interval`` [1 s] a backend purges each work stream below the first
  message a consumer may still need (``compact``), what the previous pass marked, and only
  when no max-deliveries advisory waits (its handler reads the message). An acked message
  stays until then, and a broker restarted from a consumer state older than its last acks
  (written up to 100 ms late) delivers it again as new: a first delivery of a message stored
  before this backend last joined the broker (open, reconnect) has its record read before it
  is leased (``_mark_fresh``), so a settled task is dropped as stale, not run again.
* **Encoding.** Records are JSON written by orjson (datetimes as ``isoformat``); a record it
  cannot write exactly (an integer beyond 64 bits, NaN or an infinity, a lone surrogate) is
  written and read by the standard library, marked ``_n``.
* **Max deliveries.** Each route's consumer has ``max_deliver = max_attempts + 2`` (one delivery
  for a task due later, one to dead-letter a task whose last lease expired). Past it the server
  stops delivering and sends the max-deliveries advisory; the stream ``P_ADVISORIES`` keeps those
  advisories and every backend consumes them, dead-lettering the task (``last_error`` says so).
* **Listing and counts** read every record (batched direct gets of each bucket, plus the
  messages of tasks not taken yet): ``O(tasks)``, for inspection; purge old tasks.

Durability: ``durability="require"`` [default] refuses to open unless the server runs JetStream
with ``sync_interval: always`` (read from its monitoring endpoint ``/varz``, ``monitor``
[``http://<host>:8222``]) and the streams use file storage (``QueueDurabilityError``); ``"warn"``
opens and logs an error. A server whose settings cannot be read is reported and, with
``require``, refused. Idempotency keys last until their task is purged (as on SQL); the stream's
``Nats-Msg-Id`` window [2 min] only guards the publish retries of one submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from netsuke.store import CAPABLE_ONLY, Page, TaskDraft, TaskRecord, TaskStatus, ValidationError
from netsuke.store import new_id as _new_id
from netsuke.store._records_tasks import trusted_task

from ._backend import Settle
from ._errors import TaskNotFoundError, TaskValidationError, check_page
from ._fastjson import loads_exact
from ._observe import METRICS, log, tracer
from ._redis_backend import Durability, QueueDurabilityError, QueueUnavailableError

__all__ = ["JetStreamTaskBackend"]

_SETTABLE = frozenset(TaskRecord.model_fields) - {"id"}
_SKEW = 0.05  # seconds: a delivery this close to being due is due (saves a redelivery)
SHARDS = 4  # record buckets: JetStream fsyncs each stream on its own, so they write in parallel
_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
_STREAMS_KEY = "cfg.work_streams"  # (in P_TASKS) the prefix's number of work streams
DEFAULT_WORK_STREAMS = 4
"""Work streams of a new prefix: with ``sync_interval: always`` each stream fsyncs its writes
one at a time (a task makes two: its message and the ack's tombstone), so one stream's tasks/s
is bounded by the disk's serial fsync rate (raw nats-py made 4,742 tasks/s on one stream of a
disk doing 7,240 serial fsyncs/s, 7,623 on four); four fsync in parallel."""
SETTLES_BEHIND = 4
"""Batches of acks a worker may have committing while it takes more (``settles_behind``): a
batch's settle waits for its records' fsyncs (each bucket's one after another), a take for
deliveries; overlapped, a worker made 5,078 tasks/s against 4,592 taking only after each
settle (``benchmarks/queue.py``, interleaved rounds, 2026-12-07); 2 made 4,994."""
_SETTLE_WAIT = 0.02  # seconds: how long a second pull waits for a just-published message
_RECENT = 0.5  # seconds: a take finding nothing this soon after a publish here pulls again
_ACK_TIMEOUT = 30.0  # seconds: a batch of publishes not all acknowledged by then failed
COMPACT_INTERVAL = 1.0
"""Seconds between two compactions of a kept work stream (limits retention, a prefix's layout
since 2026-12-07: an ack deletes nothing, so no tombstone is written and fsynced per task):
each pass purges what the previous pass found done (every consumer's messages acked)."""


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _record(data: dict[str, Any]) -> TaskRecord:
    return TaskRecord.model_validate({k: v for k, v in data.items() if not k.startswith("_")})


_TIMES = ("run_at", "lease_expires_at", "created_at", "updated_at", "finished_at")
_FIELDS = tuple(TaskRecord.model_fields)


def _leased_task(data: dict[str, Any]) -> TaskRecord:
    """The ``TaskRecord`` of a record this backend just leased (its own values, its times as
    datetimes or ISO text), built without validation (``trusted_task``: the take's hot path);
    ``_record`` decides when a value is not what the backend writes."""
    try:
        out = {name: data[name] for name in _FIELDS}
        for name in _TIMES:
            value = out[name]
            if type(value) is str:
                out[name] = datetime.fromisoformat(value)
            elif value is not None and type(value) is not datetime:
                return _record(data)
        if not (
            type(out["payload"]) is dict
            and type(out["capabilities"]) is list
            and type(out["attempts"]) is int
            and type(out["priority"]) is int
            and type(out["max_attempts"]) is int
            and out["status"] == "leased"
        ):
            return _record(data)
        out["backoff_base"] = float(out["backoff_base"])
        out["backoff_cap"] = float(out["backoff_cap"])
        if out["timeout"] is not None:
            out["timeout"] = float(out["timeout"])
    except (KeyError, TypeError, ValueError):
        return _record(data)
    return trusted_task(out)


try:
    import orjson as _orjson  # (the nats extra installs it)
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

_EXACT = "_n"
"""A record key (kept with it) saying orjson cannot write or read it exactly: an integer beyond
64 bits (orjson refuses to write one and reads it as a float), NaN or an infinity (it writes
``null``), a lone surrogate. The standard library writes and reads such a record."""
_PLAIN = (str, bool, type(None))


def _dump(data: dict[str, Any]) -> bytes:
    """A record as JSON: by orjson (datetimes as ``isoformat``) when it writes it exactly,
    else by the standard library, the record marked ``_EXACT`` (read back by it too)."""
    if _orjson is not None and _EXACT not in data:
        result = data.get("result")
        if type(result) in _PLAIN or type(result) is int or _finite(result):
            try:
                return _orjson.dumps(data)
            except TypeError:  # an integer beyond 64 bits, a lone surrogate
                pass
        data = {**data, _EXACT: 1}
    return json.dumps(data, default=_iso).encode()


def _loads(raw: bytes) -> dict[str, Any]:
    """A record written by ``_dump`` (or by an earlier version: the standard library's), read
    exactly (``loads_exact``: a record marked ``_EXACT``, or an older one holding an integer
    beyond 64 bits, is read by the standard library)."""
    return dict(loads_exact(raw))


def _delivered(msg: Any) -> tuple[int, int]:
    """A delivered message's delivery count and stream sequence, read from its ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or with ``<domain>.<account hash>.`` before the stream and a token after); nats-py's
    ``metadata`` for any other form."""
    tokens = str(msg.reply).split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4]), int(tokens[5])
        if len(tokens) >= 12:
            return int(tokens[6]), int(tokens[7])
    except ValueError:
        pass
    meta = msg.metadata
    return int(meta.num_delivered), int(meta.sequence.stream)


def _stream_of(msg: Any) -> str:
    """A delivered message's stream, read from its ack subject (see ``_delivered``)."""
    tokens = str(msg.reply).split(".")
    if len(tokens) == 9:
        return tokens[2]
    if len(tokens) >= 12:
        return tokens[4]
    return str(msg.metadata.stream)


def _finite(value: Any) -> bool:
    """Whether ``value`` (JSON) holds no float that is NaN or infinite."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class _Route:
    __slots__ = ("capabilities", "consumer", "kind", "max_attempts", "priority", "subject")
    # (subject_in: the route's subject in each work stream)

    def __init__(self, data: dict[str, Any], subjects: str) -> None:
        self.priority = int(data["priority"])
        self.kind = str(data["kind"])
        self.capabilities = list(data["capabilities"])
        self.max_attempts = int(data["max_attempts"])
        key = self.key(self.priority, self.kind, self.capabilities, self.max_attempts)
        self.subject = f"{subjects}.r.{key}"  # (work stream 0; stream k: .r<k>.)
        self.consumer = f"r-{key}"

    def subject_in(self, shard: int) -> str:
        """Its subject in work stream ``shard``."""
        if shard == 0:
            return self.subject
        base, _, key = self.subject.rpartition(".r.")
        return f"{base}.r{shard}.{key}"

    @staticmethod
    def key(priority: int, kind: str, capabilities: Sequence[str], max_attempts: int) -> str:
        return _hash(json.dumps([priority, kind, sorted(capabilities), max_attempts]))


_Infos = list[dict[str, Any]]


class _AckBatch:
    """The publish acks of one batch of ``_publish`` calls: each message's outcome by index
    (its stream sequence, or the error), and one future set once all are in (no future or
    coroutine per message)."""

    __slots__ = ("done", "left", "results", "tokens")

    def __init__(self) -> None:
        self.results: list[Any] = []  # int | BaseException (None: not in yet)
        self.left = 0
        self.tokens: list[str] = []
        self.done: asyncio.Future[None] | None = None  # (made by _acked)


class _Pending:
    """A lease this process granted whose record is not written yet."""

    __slots__ = ("data", "revision", "writing")

    def __init__(self, data: dict[str, Any], revision: int) -> None:
        self.data = data
        self.revision = revision
        self.writing: asyncio.Future[None] | None = None


class JetStreamTaskBackend:
    """``TaskBackend`` on NATS JetStream; see the module documentation. Build it with ``open``.
    ``clock`` gives epoch seconds [``time.time``]; ``ack_wait`` [``30.0`` s] is the consumers'
    redelivery timer (a worker's lease of the same length needs no extra message);
    ``lease_write_delay`` [``0.05`` s]: a lease's record is written this long after the take
    unless the task is settled first (then one write records both; ``0``: at once)."""

    commits_audit = False  # JetStream holds the task: its audit rows go to the store after it
    settles_behind = SETTLES_BEHIND

    def __init__(
        self,
        nc: Any,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "NETSUKE",
        ack_wait: float = 30.0,
        lease_write_delay: float = 0.05,
        work_streams: int | None = None,
    ) -> None:
        if work_streams is not None and not 1 <= work_streams <= 16:
            raise ValueError("work_streams must be 1..16")
        self.work_streams = work_streams  # (None: the prefix's, settled by open)
        self.nc = nc
        self.lease_write_delay = lease_write_delay
        self.scan_batch = 1000  # records per direct-get batch when listing
        self._pending: dict[str, _Pending] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self.js = nc.jetstream()
        self.clock = clock
        self.prefix = prefix
        self.subjects = prefix.lower()
        self.work = f"{prefix}_WORK"
        # the work streams: P_WORK (subjects p.r.>), then P_WORK_<k> (p.r<k>.>); a task's is
        # chosen by its id. With sync_interval: always each stream fsyncs its writes one at a
        # time, so several write in parallel
        self._set_works(work_streams or DEFAULT_WORK_STREAMS)
        self.dead = f"{prefix}_DEAD"
        self.advisories = f"{prefix}_ADVISORIES"
        self.bucket = f"{prefix}_TASKS"
        self.ack_wait = ack_wait
        self.kv: Any = None  # routes and idempotency keys
        self.shards: list[Any] = []  # the task records, by id
        self._routes: dict[str, _Route] = {}
        self._ready_routes: set[str] = set()  # routes whose consumer this process made
        # (priority, kind, capabilities, max attempts) -> its route, consumer made
        self._route_cache: dict[tuple[int, str, tuple[str, ...], int], _Route] = {}
        self._due: dict[str, float] = {}  # task id -> epoch s: naks and leases this process set
        self._background: list[asyncio.Task[None]] = []
        self._ack_inbox = f"{nc.new_inbox()}."  # + a number: the acks of _publish
        self._ack_sub: Any = None
        self._ack_next = 0
        # per work stream: whether it keeps acked messages (limits retention: compacted by
        # _compact_loop) or deletes each on its ack (work-queue retention, older prefixes)
        self._kept: list[bool] = []
        # kept stream -> its last sequence when this backend last joined the broker (None:
        # disconnected). A first delivery at or below it may be an acked message delivered
        # again (a broker restarted from a consumer state up to 100 ms old: its acks are not
        # fsynced one by one, and the message is still there): its record is read first
        self._fresh: dict[str, int] | None = {}
        self.compact_interval = COMPACT_INTERVAL
        self._published = 0.0  # epoch s of this process's latest publish to a stream
        self._acks: dict[str, tuple[_AckBatch, int]] = {}  # token -> its batch, its index
        self._closing = False

    # ------------------------------------------------------------------ open

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "NETSUKE",
        durability: Durability = "require",
        monitor: str | None = None,
        ack_wait: float = 30.0,
        lease_write_delay: float = 0.05,
        work_streams: int | None = None,
    ) -> JetStreamTaskBackend:
        """Connect to ``url`` (``nats://``), create or bind the streams, check durability, return
        the backend. ``QueueUnavailableError`` / ``QueueDurabilityError`` otherwise."""
        try:
            import nats
        except ImportError:
            raise QueueUnavailableError(
                "the JetStream queue needs nats-py: pip install 'netsuke[nats]'"
            ) from None
        where = _redact(url)
        made: list[JetStreamTaskBackend] = []

        async def on_error(exc: Exception) -> None:
            log.debug("queue.jetstream_connection_error", url=where, error=repr(exc))

        async def on_disconnected() -> None:
            if made and any(made[0]._kept):
                made[0]._fresh = None  # (until rejoined: first deliveries are read first)
            if not (made and made[0]._closing):
                log.warning("queue.jetstream_disconnected", url=where)

        async def on_reconnected() -> None:
            log.info("queue.jetstream_reconnected", url=where)
            if made and not made[0]._closing:
                made[0]._fresh = None
                made[0]._rejoined()

        try:
            nc = await nats.connect(
                url,
                connect_timeout=5,
                allow_reconnect=True,
                max_reconnect_attempts=2,  # at start: fail fast, one clear line
                reconnect_time_wait=0.2,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
            nc.options["max_reconnect_attempts"] = -1  # once up: reconnect for ever
        except Exception as exc:
            raise QueueUnavailableError(
                f"cannot reach NATS at {_redact(url)}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            backend = cls(
                nc,
                clock=clock,
                prefix=prefix,
                ack_wait=ack_wait,
                lease_write_delay=lease_write_delay,
                work_streams=work_streams,
            )
        except ValueError:
            await nc.close()
            raise
        made.append(backend)
        try:
            await backend._setup()
            await backend.check_durability(url, durability, monitor)
        except BaseException:
            await backend.close()
            raise
        return backend

    def _set_works(self, n: int) -> None:
        self.works = [self.work, *(f"{self.prefix}_WORK_{k}" for k in range(1, n))]

    async def _streams_of_prefix(self) -> None:
        """Settle the number of work streams: the one recorded for this prefix (KV key
        ``cfg.work_streams``), else for a prefix made before it was recorded the streams that
        exist, else (a new prefix) ``work_streams`` [``DEFAULT_WORK_STREAMS``], recorded. A
        number asked for that is not the prefix's is refused (tasks map to streams by id)."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        try:
            entry = await self.kv.get(_STREAMS_KEY)
            recorded: int | None = int(entry.value)
        except KeyNotFoundError:
            recorded = None
        if recorded is None:
            n = 0
            while True:  # a prefix made before the number was recorded: what exists
                try:
                    await self.js.stream_info(self.work if n == 0 else f"{self.prefix}_WORK_{n}")
                except Exception:
                    break
                n += 1
            want = n or self.work_streams or DEFAULT_WORK_STREAMS
            try:
                await self.kv.create(_STREAMS_KEY, str(want).encode())
                recorded = want
            except KeyWrongLastSequenceError:  # another backend recorded it just now
                recorded = int((await self.kv.get(_STREAMS_KEY)).value)
        if self.work_streams is not None and self.work_streams != recorded:
            raise QueueUnavailableError(
                f"the JetStream queue {self.prefix} has {recorded} work streams, not "
                f"{self.work_streams}: open it with work_streams={recorded} (or none)"
            )
        self.work_streams = recorded
        self._set_works(recorded)

    async def _setup(self) -> None:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        file = StorageType.FILE  # (every stream: acknowledged = on disk)
        try:
            self.kv = await self._bucket(self.bucket)
            await self._streams_of_prefix()
            # a new prefix's work streams keep acked messages (limits retention; compacted in
            # the background): with work-queue retention each ack deletes its message, a
            # tombstone written and fsynced on its own, a third of a task's writes. A prefix
            # made before keeps its work-queue streams (the retention cannot change)
            self._kept = []
            for k, name in enumerate(self.works):
                retention = await self._stream(
                    StreamConfig(
                        name=name,
                        subjects=[self._work_subjects(k)],
                        retention=RetentionPolicy.LIMITS,
                        storage=file,
                        duplicate_window=120.0,
                        allow_direct=True,
                    )
                )
                self._kept.append(retention != RetentionPolicy.WORK_QUEUE)
            await self._stream(
                StreamConfig(name=self.dead, subjects=[f"{self.subjects}.dead"], storage=file)
            )
            await self._stream(
                StreamConfig(
                    name=self.advisories,
                    subjects=[f"{_ADVISORY}.{name}.>" for name in self.works],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=file,
                )
            )
            self.shards = [await self._bucket(f"{self.bucket}_{i}") for i in range(SHARDS)]
        except QueueUnavailableError:
            raise
        except Exception as exc:
            raise QueueUnavailableError(
                f"JetStream is not available on this NATS server: {type(exc).__name__}: {exc}"
            ) from None
        self._ack_sub = await self.nc.subscribe(f"{self._ack_inbox}*", cb=self._on_ack)
        watcher = await self.kv.watch("r.>")
        async for entry in watcher:  # the routes known so far, then live updates
            if entry is None:
                break
            self._add_route(entry.value)
        self._background.append(asyncio.create_task(self._watch_routes(watcher)))
        for name in self.works:
            self._background.append(asyncio.create_task(self._watch_advisories(name)))
        if any(self._kept):
            await self._mark_fresh()
            self._background.append(asyncio.create_task(self._compact_loop()))

    async def _bucket(self, name: str) -> Any:
        from nats.js.api import StorageType

        try:
            return await self.js.key_value(name)
        except Exception:
            return await self.js.create_key_value(
                bucket=name, history=1, storage=StorageType.FILE, direct=True
            )

    def _rec(self, task_id: str) -> Any:
        """The KV bucket holding ``task_id``'s record."""
        return self.shards[int(task_id[-2:], 16) % SHARDS]

    async def _stream(self, config: Any) -> Any:
        """Create the stream ``config`` describes, or bind the one of that name (its subjects
        extended to these); its retention policy (an existing stream keeps its own)."""
        try:
            info = await self.js.stream_info(config.name)
        except Exception:
            await self.js.add_stream(config)
            return config.retention
        if set(config.subjects) - set(info.config.subjects or []):  # (more work streams now)
            info.config.subjects = sorted({*(info.config.subjects or []), *config.subjects})
            await self.js.update_stream(info.config)
        return info.config.retention

    def _work_subjects(self, shard: int) -> str:
        return f"{self.subjects}.r{shard or ''}.>"

    def _shard(self, task_id: str) -> int:
        """The work stream of ``task_id``."""
        return int(task_id[-2:], 16) % len(self.works) if len(self.works) > 1 else 0

    async def check_durability(
        self, url: str, durability: Durability, monitor: str | None = None
    ) -> None:
        """Refuse (``require``) or log an error (``warn``) unless the server fsyncs every write
        (``sync_interval: always``) and the streams are on file storage."""
        problems: list[str] = []
        buckets = [f"KV_{self.bucket}", *(f"KV_{self.bucket}_{i}" for i in range(SHARDS))]
        for name in (*self.works, self.dead, self.advisories, *buckets):
            info = await self.js.stream_info(name)
            storage = getattr(info.config.storage, "value", info.config.storage)
            if storage != "file":
                problems.append(f"stream {name} has {storage} storage")
        host = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/")[0].rsplit(":", 1)[0]
        where = monitor or f"http://{host or '127.0.0.1'}:8222"
        sync = await _sync_always(where.rstrip("/") + "/varz")
        if sync is None:
            problems.append(
                f"its sync_interval could not be read from {where}/varz (set ?monitor=)"
            )
        elif not sync:
            problems.append("JetStream does not run with sync_interval: always")
        if not problems:
            log.info("queue.jetstream_durable", url=_redact(url))
            return
        problem = (
            f"NATS at {_redact(url)}: {'; '.join(problems)}: acknowledged tasks can be lost on "
            "a power loss or crash of the NATS host; run JetStream with "
            "`sync_interval: always` and file storage"
        )
        if durability == "require":
            raise QueueDurabilityError(f"{problem} (or accept the risk with ?durability=warn)")
        log.error("queue.jetstream_not_durable", url=_redact(url), problem=problem)

    # --------------------------------------------------------------- helpers

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _add_route(self, raw: bytes) -> _Route:
        route = _Route(json.loads(raw), self.subjects)
        self._routes.setdefault(route.consumer, route)
        return route

    async def _watch_routes(self, watcher: Any) -> None:
        try:
            async for entry in watcher:
                if entry is not None and entry.value:
                    self._add_route(entry.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (closing)
            if not self._closing:
                log.warning("queue.jetstream_route_watch_failed", error=repr(exc))

    async def _route(
        self, priority: int, kind: str, capabilities: Sequence[str], max_attempts: int
    ) -> _Route:
        """The route of tasks like these, its consumer made (once per process)."""
        from nats.js.api import AckPolicy, ConsumerConfig

        known = self._route_cache.get((priority, kind, tuple(capabilities), max_attempts))
        if known is not None:  # (the hot path: no hashing, no JSON)
            return known
        data = {
            "priority": priority,
            "kind": kind,
            "capabilities": sorted(capabilities),
            "max_attempts": max_attempts,
        }
        route = _Route(data, self.subjects)
        if route.consumer in self._ready_routes:
            self._route_cache[(priority, kind, tuple(capabilities), max_attempts)] = route
            return route
        for k, name in enumerate(self.works):  # (the same config again is a no-op)
            await self.js.add_consumer(
                name,
                ConsumerConfig(
                    durable_name=route.consumer,
                    filter_subject=f"{route.subject_in(k)}.*",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    max_deliver=route.max_attempts + 2,
                    max_ack_pending=65536,
                ),
            )
        with contextlib.suppress(Exception):  # (exists: another process made it)
            await self.kv.create(f"r.{route.consumer[2:]}", json.dumps(data).encode())
        self._routes.setdefault(route.consumer, route)
        self._ready_routes.add(route.consumer)
        self._route_cache[(priority, kind, tuple(capabilities), max_attempts)] = route
        return route

    async def _load(self, task_id: str) -> tuple[dict[str, Any], int] | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._rec(task_id).get(f"t.{task_id}")
        except KeyNotFoundError:
            return None
        return _loads(entry.value), int(entry.revision)

    async def _queued(self, task_id: str) -> dict[str, Any] | None:
        """A task only its delivery message holds yet (submitted, never taken)."""
        k = self._shard(task_id)
        reply = await self.nc.request(
            f"$JS.API.DIRECT.GET.{self.works[k]}",
            json.dumps({"last_by_subj": f"{self.subjects}.r{k or ''}.*.{task_id}"}).encode(),
            timeout=5.0,
        )
        headers = reply.headers or {}
        if headers.get("Status") or "Nats-Sequence" not in headers:
            return None
        data: dict[str, Any] = _loads(reply.data)
        data["_m"] = int(headers["Nats-Sequence"])
        return data

    async def _find(self, task_id: str) -> dict[str, Any] | None:
        """The task's record, or its delivery message's when it has no record yet."""
        pending = self._pending.get(task_id)
        if pending is not None:
            return dict(pending.data)
        got = await self._load(task_id)
        return got[0] if got is not None else await self._queued(task_id)

    async def _cas(self, task_id: str, data: dict[str, Any], revision: int) -> int | None:
        """Write ``data`` if the record is still at ``revision``; its new revision, else None."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return int(await self._rec(task_id).update(f"t.{task_id}", _dump(data), last=revision))
        except KeyWrongLastSequenceError:
            return None

    async def _reply(self, subject: str | None, body: bytes) -> None:
        """An ack, nak, progress or term on a delivery's ack subject (not waited for: a lost
        one brings the message back, and the take drops it as stale)."""
        if subject:
            await self.nc.publish(subject, body)

    @staticmethod
    def _nak(delay: float) -> bytes:
        if delay <= 0:
            return b"-NAK"
        return b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()

    # ---------------------------------------------------------------- submit

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]:
        from nats.js.errors import KeyWrongLastSequenceError

        task_id = _new_id()
        if draft.idempotency_key is not None:
            idem = f"i.{_hash(draft.idempotency_key)}"
            try:
                await self.kv.create(idem, task_id.encode())
            except KeyWrongLastSequenceError:  # taken: the first task, unless never submitted
                first = await self._first(idem)
                if first is not None:
                    return first, False
                task_id = (await self.kv.get(idem)).value.decode()  # finish it with this draft
        subject, body, data = await self._message(draft, task_id, self.now())
        # a keyed submit may publish again what an earlier one did (finishing it): the
        # stream's duplicate window keeps one; an id made here is never published twice
        keyed = {"Nats-Msg-Id": task_id} if draft.idempotency_key is not None else None
        await self.js.publish(subject, body, headers=keyed)
        self._published = self.clock()
        return trusted_task(data), True

    async def _publish(
        self,
        batch: _AckBatch,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Publish to a stream with the ack outstanding, into ``batch`` (``_acked`` waits for
        the lot): its index there, where the stored message's sequence lands (``APIError``
        when the stream refuses it). The acks come back on one subscription of this
        backend's (nats-py's ``publish_async`` costs twice the CPU: a future, a timer and a
        ``PubAck`` each)."""
        if self._ack_sub is None:  # (open made it; a backend built by hand makes it here)
            self._ack_sub = await self.nc.subscribe(f"{self._ack_inbox}*", cb=self._on_ack)
        self._ack_next += 1
        token = str(self._ack_next)
        index = len(batch.results)
        batch.results.append(None)
        batch.tokens.append(token)
        batch.left += 1
        self._acks[token] = (batch, index)
        try:
            await self.nc.publish(subject, body, reply=self._ack_inbox + token, headers=headers)
        except BaseException:
            del self._acks[token]
            batch.results.pop()
            batch.tokens.pop()
            batch.left -= 1
            raise
        return index

    async def _on_ack(self, msg: Any) -> None:
        entry = self._acks.pop(msg.subject[len(self._ack_inbox) :], None)
        if entry is None:
            return
        batch, index = entry
        outcome: Any
        if not msg.data:  # a status: no stream listens (503)
            from nats.js.errors import NoStreamResponseError

            outcome = NoStreamResponseError()
        else:
            try:
                reply = _loads(msg.data)
                if "error" in reply:
                    from nats.js.errors import APIError

                    outcome = APIError.from_error(reply["error"])
                else:
                    outcome = int(reply["seq"])
            except Exception as exc:  # not a publish ack
                outcome = exc
        batch.results[index] = outcome
        batch.left -= 1
        if batch.left == 0 and batch.done is not None and not batch.done.done():
            batch.done.set_result(None)

    async def _acked(self, batch: _AckBatch) -> list[int | BaseException]:
        """The outcomes of ``batch``'s publishes, by index, once all are in; ``_ACK_TIMEOUT``
        at most (then ``TimeoutError``, the rest forgotten)."""
        if batch.left > 0:
            batch.done = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(_ACK_TIMEOUT):
                    await batch.done
            except BaseException:
                self._forget(batch)
                raise
        return batch.results

    def _forget(self, batch: _AckBatch) -> None:
        """Stop waiting for ``batch``'s acks still out."""
        for token in batch.tokens:
            self._acks.pop(token, None)

    async def submit_many(self, drafts: Sequence[TaskDraft]) -> list[tuple[TaskRecord, bool]]:
        """Publish ``drafts`` with their acks outstanding together (the server takes them
        back to back; each acknowledged once stored, fsynced with ``sync_interval: always``);
        drafts with an idempotency key go through ``submit``, concurrently."""
        now = self.now()
        keyed = [i for i, d in enumerate(drafts) if d.idempotency_key is not None]
        dedup = asyncio.gather(*(self.submit(drafts[i]) for i in keyed))
        out: list[tuple[TaskRecord, bool] | None] = [None] * len(drafts)
        batch = _AckBatch()
        try:
            for i, draft in enumerate(drafts):
                if draft.idempotency_key is not None:
                    continue
                task_id = _new_id()
                subject, body, data = await self._message(draft, task_id, now)
                await self._publish(batch, subject, body)  # (no key: no Msg-Id)
                self._published = self.clock()
                out[i] = (trusted_task(data), True)
            for result in await self._acked(batch):
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            self._forget(batch)
            raise
        finally:
            for i, got in zip(keyed, await dedup, strict=True):
                out[i] = got
        return [got for got in out if got is not None]

    async def _message(
        self, draft: TaskDraft, task_id: str, now: datetime
    ) -> tuple[str, bytes, dict[str, Any]]:
        """A new task's delivery message (subject, body) and its record."""
        data = draft.new_record(task_id, now)
        text = draft.payload_json
        exact = text is None or "NaN" in text or "Infinity" in text  # (orjson writes null)
        route = await self._route(
            draft.priority, draft.kind, draft.capabilities, draft.max_attempts
        )
        body = _dump({**data, _EXACT: 1} if exact else data)
        return f"{route.subject_in(self._shard(task_id))}.{task_id}", body, data

    async def _first(self, idem: str) -> TaskRecord | None:
        """The task an idempotency key names, once its record exists (waits briefly for a
        concurrent submit of the same key to create it); None: its submit never finished."""
        entry = await self.kv.get(idem)
        task_id = entry.value.decode()
        for _ in range(50):
            got = await self._find(task_id)
            if got is not None:
                return _record(got)
            await asyncio.sleep(0.02)
        return None

    # ------------------------------------------------------------------ take

    def _serves(
        self, route: _Route, capabilities: frozenset[str] | None, kinds: Sequence[str] | None
    ) -> bool:
        if kinds is not None and route.kind not in kinds:
            return False
        if capabilities is None:
            return True
        if not route.capabilities and CAPABLE_ONLY in capabilities:
            return False
        return all(c in capabilities for c in route.capabilities)

    async def _pull(self, route: _Route, n: int, wait: float = 0.0) -> list[Any]:
        """Up to ``n`` messages of ``route`` that are ready now, from every work stream at once
        (a share of ``n`` from each)."""
        if len(self.works) == 1:
            return await self._pull_from(self.work, route, n, wait)
        share = -(-n // len(self.works))
        got = await asyncio.gather(*(self._pull_from(w, route, share, wait) for w in self.works))
        return [msg for part in got for msg in part]

    async def _pull_from(self, work: str, route: _Route, n: int, wait: float = 0.0) -> list[Any]:
        """Up to ``n`` messages of ``route`` in the work stream ``work`` that are ready now (a
        ``no_wait`` pull request on a subscription of its own: JetStream delivers them under
        their own subjects)."""
        got: list[Any] = []
        done = asyncio.Event()

        async def on_message(msg: Any) -> None:
            status = msg.headers.get("Status") if msg.headers else None
            if status is not None:
                if status != "100":  # (100: a heartbeat)
                    done.set()
                return
            if done.is_set():  # late: nobody takes it now, put it back at once
                if msg.reply:
                    await self.nc.publish(msg.reply, b"-NAK")
                return
            got.append(msg)
            if len(got) >= n:
                done.set()

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_message)
        try:
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{work}.{route.consumer}",
                json.dumps(
                    # (no_wait with expires: none ready -> wait up to expires for the first)
                    {"batch": n, "no_wait": True, "expires": int(wait * 1e9)}
                    if wait
                    else {"batch": n, "no_wait": True}
                ).encode(),
                reply=inbox,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await done.wait()
            done.set()
        finally:
            await sub.unsubscribe()
        return list(got)

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
        routes = [r for r in self._routes.values() if self._serves(r, capabilities, kinds)]
        routes.sort(key=lambda r: -r.priority)
        out: list[TaskRecord] = []
        # a pull right after a publish's ack can miss its message (the server tells the
        # consumer asynchronously): a take finding nothing soon after this process published
        # asks once more, waiting up to _SETTLE_WAIT for the first message
        for wait in (0.0, _SETTLE_WAIT):
            if wait and (out or self.clock() - self._published > _RECENT):
                break
            for route in routes:
                if len(out) >= limit:
                    break
                if route.consumer not in self._ready_routes:
                    self._ready_routes.add(route.consumer)  # (made by the process that submitted)
                msgs = await self._pull(route, limit - len(out), wait)
                if msgs:
                    out += await self._lease_all(consumer, msgs, lease)
        if out and self.lease_write_delay > 0:
            flush = asyncio.create_task(self._flush([t.id for t in out], self.lease_write_delay))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        out.sort(key=lambda t: (-t.priority, t.run_at, t.created_at))
        return out

    async def _lease_all(
        self, consumer: str, msgs: Sequence[Any], lease: float
    ) -> list[TaskRecord]:
        """Lease the delivered ``msgs``: a first delivery (no record to read: the message is
        the record) here at once, the others (their record read first) concurrently."""
        out: list[TaskRecord] = []
        later: list[Any] = []
        replies: list[tuple[str, bytes]] = []
        for msg in msgs:
            body, seq, first = self._delivery(msg)
            if not first or self.lease_write_delay <= 0:
                later.append(msg)
                continue
            granted = self._grant(consumer, msg, lease, body, seq, None, replies)
            if granted is not None:
                self._pending[granted[0]["id"]] = _Pending(*granted)
                self._exact(msg.reply, lease, replies)
                out.append(_leased_task(granted[0]))
        for subject, reply in replies:
            await self._reply(subject, reply)
        if later:
            leased = await asyncio.gather(*(self._lease(consumer, m, lease) for m in later))
            out += [t for t in leased if t is not None]
        return out

    def _delivery(self, msg: Any) -> tuple[dict[str, Any], int, bool]:
        """A delivered message's record, its stream sequence, and whether its task has no
        record yet (its first delivery, not a requeue's message, and on a kept stream stored
        after the broker was last (re)joined: see ``_mark_fresh``)."""
        body: dict[str, Any] = _loads(msg.data)
        delivered, seq = _delivered(msg)
        first = delivered == 1 and "_requeued" not in body
        if first and self._fresh != {}:
            fresh = self._fresh
            first = fresh is not None and seq > fresh.get(_stream_of(msg), 0)
        return body, seq, first

    async def _lease(self, consumer: str, msg: Any, lease: float) -> TaskRecord | None:
        body, seq, first = self._delivery(msg)
        # a submitted task's first delivery has no record yet (only a lease makes one; a
        # requeued task's message says so): no read
        got = None if first else await self._load(str(body["id"]))
        replies: list[tuple[str, bytes]] = []
        granted = self._grant(consumer, msg, lease, body, seq, got, replies)
        if granted is not None:
            data, revision = granted
            if self.lease_write_delay <= 0:
                if await self._cas(data["id"], data, revision) is None:
                    granted = None  # changed under us (a requeue, another take): it comes back
            else:  # written by _flush unless settled first
                self._pending[data["id"]] = _Pending(data, revision)
            if granted is not None:
                self._exact(msg.reply, lease, replies)
        for subject, reply in replies:
            await self._reply(subject, reply)
        return None if granted is None else _leased_task(granted[0])

    def _grant(
        self,
        consumer: str,
        msg: Any,
        lease: float,
        body: dict[str, Any],
        seq: int,
        got: tuple[dict[str, Any], int] | None,
        replies: list[tuple[str, bytes]],
    ) -> tuple[dict[str, Any], int] | None:
        """The leased record of a delivery and the revision it replaces (``got``: the task's
        record; None: none yet, the message is the record), or None when it is not granted
        (stale: acked; not due: put back until it is). The replies to send go to ``replies``."""
        task_id = str(body["id"])
        if got is None:  # never taken: the message is the record, created by the lease
            body["_m"] = seq
            # earlier deliveries without a record: leases of workers killed before writing
            # them (lease_write_delay), and one "not due yet" for a task submitted delayed
            delayed = body["run_at"] > body["created_at"]
            body["attempts"] = max(0, _delivered(msg)[0] - 1 - int(delayed))
            got = body, 0
        data, revision = got
        now = self.clock()
        status = data["status"]
        if data.get("_m") != seq or status not in ("queued", "leased"):
            replies.append((msg.reply, b"+ACK"))  # stale: the task moved on
            return None
        if status == "queued":
            wait = datetime.fromisoformat(data["run_at"]).timestamp() - now
        else:
            wait = data.get("_x", 0) / 1000 - now
        if wait > _SKEW:  # not due (a delay, or another consumer's lease): back until then
            replies.append((msg.reply, self._nak(wait)))
            self._due[task_id] = now + wait
            return None
        when = datetime.fromtimestamp(now, UTC)
        expires = when + timedelta(seconds=lease)
        data.update(
            status="leased",
            attempts=int(data["attempts"]) + 1,
            lease_owner=consumer,
            lease_expires_at=expires,
            updated_at=when,
            _x=_ms(expires),
            _r=msg.reply,
        )
        self._due[task_id] = now + lease
        return data, revision

    def _exact(self, reply: str, lease: float, replies: list[tuple[str, bytes]]) -> None:
        """A lease other than the consumer's ``ack_wait``, set exactly: ``nak(delay=lease)``."""
        if abs(lease - self.ack_wait) > 1e-3:
            replies.append((reply, self._nak(lease)))

    # ---------------------------------------------------------------- settle

    async def _flush(self, ids: Sequence[str], delay: float) -> None:
        """Write the records of the leases ``ids`` still pending after ``delay`` seconds (a
        coroutine each only for those: most were settled, and written, by then)."""
        await asyncio.sleep(delay)
        pending = self._pending
        left = [i for i in ids if (p := pending.get(i)) is not None and p.writing is None]
        if left:
            await asyncio.gather(*(self._write_lease(i) for i in left))

    async def _write_lease(self, task_id: str) -> None:
        pending = self._pending.get(task_id)
        if pending is None or pending.writing is not None:
            return  # settled (or being written) already
        pending.writing = asyncio.get_running_loop().create_future()
        try:
            if await self._cas(task_id, pending.data, pending.revision) is None:
                log.warning("queue.jetstream_lease_lost", task=task_id)
        except Exception as exc:  # the settle finds no lease; the message comes back
            log.warning("queue.jetstream_lease_write_failed", task=task_id, error=repr(exc))
        finally:
            self._pending.pop(task_id, None)
            pending.writing.set_result(None)

    async def _held(self, consumer: str, task_id: str) -> tuple[dict[str, Any], int] | None:
        """The record of a lease ``consumer`` holds, and the revision to replace."""
        pending = self._pending.get(task_id)
        if pending is not None:
            if pending.writing is None:  # not written yet: the caller's write records both
                data = pending.data
                if data["lease_owner"] != consumer or data["_x"] <= _ms(self.now()):
                    return None
                del self._pending[task_id]
                return dict(data), pending.revision
            await asyncio.shield(pending.writing)
        got = await self._load(task_id)
        if got is None:
            return None
        data, revision = got
        if (
            data["status"] != "leased"
            or data.get("lease_owner") != consumer
            or data.get("_x", 0) <= _ms(self.now())
        ):
            return None
        return data, revision

    async def settle(self, change: Settle) -> bool:
        consumer, task_id, values = change
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValidationError("values", f"not settable task columns: {sorted(unknown)}")
        held = await self._held(consumer, task_id)
        if held is None:
            return False
        data, revision = held
        now = self.now()
        new = values.get("status", "leased")
        data.update(values, updated_at=now)
        reply = data.get("_r")
        if new != "leased":
            for meta in ("_x", "_r"):
                data.pop(meta, None)
        if await self._cas(task_id, data, revision) is None:
            return False
        await self._after(task_id, values, reply, now)
        return True

    async def _settle_many(self, changes: Sequence[Settle]) -> list[bool]:
        """``settle`` each change (columns checked by the caller), durable on return. The
        leases this process granted and has not written yet (the common case: settled within
        ``lease_write_delay``) are written here together, each a compare-and-set publish with
        its ack outstanding (one round of acks for the lot, no coroutine each); the others go
        through ``settle``, concurrently."""
        from nats.js.errors import APIError

        applied: list[bool] = [False] * len(changes)
        slow: list[int] = []
        writes: list[tuple[int, str | None, int]] = []
        batch = _AckBatch()
        now = self.now()
        expiry = _ms(now)
        for i, (consumer, task_id, values) in enumerate(changes):
            pending = self._pending.get(task_id)
            if pending is None or pending.writing is not None:
                slow.append(i)
                continue
            if pending.data["lease_owner"] != consumer or pending.data["_x"] <= expiry:
                continue  # not held (False)
            del self._pending[task_id]
            data = dict(pending.data)
            data.update(values, updated_at=now)
            reply = data.get("_r")
            if values.get("status", "leased") != "leased":
                data.pop("_x", None)
                data.pop("_r", None)
            shard = int(task_id[-2:], 16) % SHARDS
            try:
                index = await self._publish(
                    batch,
                    f"$KV.{self.bucket}_{shard}.t.{task_id}",
                    _dump(data),
                    {"Nats-Expected-Last-Subject-Sequence": str(pending.revision)},
                )
            except BaseException:
                self._forget(batch)
                raise
            writes.append((i, reply, index))
        others = asyncio.gather(*(self.settle(changes[i]) for i in slow))
        try:
            done = await self._acked(batch)
        except BaseException:
            others.cancel()
            await asyncio.gather(others, return_exceptions=True)
            raise
        for i, reply, index in writes:
            result = done[index]
            if isinstance(result, APIError) and result.err_code in (10071, 10164):
                continue  # the record moved on (False): its lease was not ours any more
            if isinstance(result, BaseException):
                others.cancel()
                await asyncio.gather(others, return_exceptions=True)
                raise result
            applied[i] = True
            await self._after(changes[i][1], changes[i][2], reply, now)
        for i, ok in zip(slow, await others, strict=True):
            applied[i] = ok
        return applied

    async def _after(
        self, task_id: str, values: dict[str, Any], reply: str | None, now: datetime
    ) -> None:
        """What follows a settle's durable write: the delivery's ack (``succeeded``), nak with
        the retry's delay (``queued``) or term and the dead-letter stream (``dead``)."""
        new = values.get("status", "leased")
        if new == "succeeded":
            await self._reply(reply, b"+ACK")
            self._due.pop(task_id, None)
        elif new == "queued":
            run_at = values.get("run_at")
            wait = (run_at - now).total_seconds() if isinstance(run_at, datetime) else 0.0
            await self._reply(reply, self._nak(wait))
            self._due[task_id] = now.timestamp() + max(0.0, wait)
        elif new == "dead":
            await self._reply(reply, b"+TERM")
            self._due.pop(task_id, None)
            await self.js.publish(f"{self.subjects}.dead", task_id.encode())

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
        """The settles (concurrently; each durable on return), then the take; a take failing
        after them is logged and returns no tasks."""
        for _, _, values in changes:
            unknown = set(values) - _SETTABLE
            if unknown:
                raise ValidationError("values", f"not settable task columns: {sorted(unknown)}")
        applied = await self._settle_many(changes)
        if limit <= 0:
            return applied, []
        try:
            got = await self.take(
                consumer, capabilities=capabilities, limit=limit, lease=lease, kinds=kinds
            )
        except Exception as exc:
            if not changes:
                raise
            log.warning("worker.take_failed", worker=consumer, error=repr(exc))
            got = []
        return applied, got

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int:
        async def one(task_id: str) -> bool:
            held = await self._held(consumer, task_id)
            if held is None:
                return False
            data, revision = held
            now = self.clock()
            expires = datetime.fromtimestamp(now + lease, UTC)
            data.update(lease_expires_at=expires, _x=_ms(expires))
            if await self._cas(task_id, data, revision) is None:
                return False
            progress = b"+WPI" if abs(lease - self.ack_wait) <= 1e-3 else self._nak(lease)
            await self._reply(data.get("_r"), progress)
            self._due[task_id] = now + lease
            return True

        return sum(await asyncio.gather(*(one(i) for i in task_ids)))

    # ----------------------------------------------------------- inspection

    async def get(self, task_id: str) -> TaskRecord:
        got = await self._find(task_id)
        if got is None:
            raise TaskNotFoundError(task_id)
        return _record(got)

    async def _all(self) -> list[dict[str, Any]]:
        """Every task record (a KV watch of ``t.>`` per shard), oldest first."""
        shards = await asyncio.gather(
            *(self._scan(f"{self.bucket}_{i}") for i in range(len(self.shards)))
        )
        leases = {i: dict(p.data) for i, p in self._pending.items()}
        rows = [leases.get(d["id"], d) for shard in shards for d in shard]
        known = {d["id"] for d in rows}
        rows += [d for i, d in leases.items() if i not in known]
        known |= set(leases)
        fresh: list[str] = []
        for k, name in enumerate(self.works):
            info = await self.js.stream_info(name, subjects_filter=self._work_subjects(k))
            fresh += [s.rsplit(".", 1)[1] for s in (info.state.subjects or {})]
        queued = await asyncio.gather(*(self._queued(i) for i in fresh if i not in known))
        rows += [d for d in queued if d is not None and d["id"] not in known]
        rows.sort(key=lambda d: (d["created_at"], d["id"]))
        return rows

    async def _scan(self, bucket: str) -> list[dict[str, Any]]:
        """Every record of the KV bucket ``bucket``, read with batched direct gets in stream
        order (no consumer: complete however loaded the server is)."""
        rows: list[dict[str, Any]] = []
        seq = 1
        while True:
            got: list[Any] = []
            done = asyncio.Event()
            status: dict[str, str] = {}

            async def on_message(
                msg: Any,
                got: list[Any] = got,
                done: asyncio.Event = done,
                status: dict[str, str] = status,
            ) -> None:
                headers = msg.headers or {}
                if "Status" in headers:
                    status.update({k: str(v) for k, v in headers.items() if isinstance(k, str)})
                    done.set()
                else:
                    got.append(msg)

            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox, cb=on_message)
            request = {"seq": seq, "next_by_subj": f"$KV.{bucket}.t.>", "batch": self.scan_batch}
            try:
                await self.nc.publish(
                    f"$JS.API.DIRECT.GET.KV_{bucket}", json.dumps(request).encode(), reply=inbox
                )
                async with asyncio.timeout(30.0):
                    await done.wait()
            finally:
                await sub.unsubscribe()
            for msg in got:
                headers = msg.headers or {}
                if headers.get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
                    continue
                rows.append(_loads(msg.data))
            if status.get("Status") != "204" or int(status.get("Nats-Num-Pending", "0")) <= 0:
                return rows  # (404: nothing from seq on)
            seq = int(status["Nats-Last-Sequence"]) + 1

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
        rows = [
            d
            for d in await self._all()
            if (status is None or d["status"] == status)
            and (kind is None or d["kind"] == kind)
            and (id_prefix is None or str(d["id"]).startswith(id_prefix))
        ]
        page = [_record(d) for d in rows[offset : offset + limit]]
        more = len(rows) > offset + limit
        return Page(items=page, next_cursor=str(offset + limit) if more else None)

    async def count(self, status: TaskStatus | None = None) -> int:
        return sum(1 for d in await self._all() if status is None or d["status"] == status)

    async def requeue(self, task_id: str) -> TaskRecord:
        got = await self._load(task_id)
        if got is None or got[0]["status"] != "dead":
            raise TaskNotFoundError(task_id, "dead")
        data, revision = got
        now = self.now()
        data.update(
            status="queued",
            attempts=0,
            run_at=now,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=None,
            updated_at=now,
        )
        route = await self._route(
            data["priority"], data["kind"], data["capabilities"], data["max_attempts"]
        )
        body = _dump({**data, "_m": None, "_requeued": True})
        ack = await self.js.publish(f"{route.subject_in(self._shard(task_id))}.{task_id}", body)
        self._published = self.clock()
        data["_m"] = int(ack.seq)
        if await self._cas(task_id, data, revision) is None:  # (its message is dropped)
            raise TaskNotFoundError(task_id, "dead")
        return _record(data)

    async def purge(self, status: TaskStatus, *, ids: Sequence[str] | None = None) -> int:
        if status not in ("dead", "succeeded"):
            raise TaskValidationError("status", "only dead or succeeded tasks can be purged")
        wanted = None if ids is None else set(ids)
        n = 0
        for d in await self._all():
            if d["status"] != status or (wanted is not None and d["id"] not in wanted):
                continue
            await self._rec(d["id"]).purge(f"t.{d['id']}")
            k = self._shard(d["id"])
            if self._kept[k]:  # its messages (acked, not compacted yet) go too
                await self.js.purge_stream(
                    self.works[k], subject=f"{self.subjects}.r{k or ''}.*.{d['id']}"
                )
            if d.get("idempotency_key") is not None:
                await self.kv.purge(f"i.{_hash(d['idempotency_key'])}")
            n += 1
        return n

    async def next_due(self) -> datetime | None:
        """The earliest retry, delay or lease end this process knows of (others' are found by
        the workers' polls)."""
        now = self.clock()
        for task_id in [i for i, at in self._due.items() if at < now - 60]:
            del self._due[task_id]
        times = [at for at in self._due.values() if at >= now - _SKEW]
        return datetime.fromtimestamp(min(times), UTC) if times else None

    # ---------------------------------------------------------- dead letters

    async def _watch_advisories(self, work: str) -> None:
        """Dead-letter the tasks the server gave up on (the max-deliveries advisories of the
        work stream ``work``)."""
        durable = "netsuke" if work == self.work else f"netsuke-{work.rsplit('_', 1)[1]}"
        try:
            sub = await self.js.pull_subscribe(
                f"{_ADVISORY}.{work}.>", durable=durable, stream=self.advisories
            )
        except Exception as exc:
            log.warning("queue.jetstream_advisories_unavailable", error=repr(exc))
            return
        from nats.errors import TimeoutError as NatsTimeout

        while not self._closing and not self.nc.is_closed:
            try:
                msgs = await sub.fetch(16, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, NatsTimeout):  # nothing to do
                continue
            except Exception:  # reconnecting: try again in a while
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await self._max_delivered(json.loads(msg.data))
                    await msg.ack()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # redelivered to a backend later
                    log.warning("queue.jetstream_advisory_failed", error=repr(exc))

    async def _max_delivered(self, advisory: dict[str, Any]) -> None:
        seq = int(advisory["stream_seq"])
        work = str(advisory.get("stream") or self.work)
        deliveries = int(advisory.get("deliveries", 0))
        try:
            raw = await self.js.get_msg(work, seq)
        except Exception:  # gone already (acked or dealt with by another backend)
            return
        task_id = str(json.loads(raw.data)["id"])
        got = await self._load(task_id)
        if got is not None and got[0].get("_m") == seq and got[0]["status"] in ("queued", "leased"):
            data, revision = got
            now = self.now()
            data.update(
                status="dead",
                last_error=(
                    f"delivered {deliveries} times without an ack "
                    "(the stream's max deliveries; the last lease expired)"
                ),
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
            if await self._cas(task_id, data, revision) is not None:
                await self.js.publish(f"{self.subjects}.dead", task_id.encode())
                METRICS.tasks["dead_lettered"] += 1
                log.warning("task.dead_lettered", task=task_id, error=data["last_error"])
        with contextlib.suppress(Exception):
            await self.js.delete_msg(work, seq)

    async def _mark_fresh(self) -> None:
        """Note each kept work stream's last sequence (at open, and again when the connection
        comes back): a first delivery of a message stored before may be one acked already,
        delivered again by a broker that restarted (a consumer's acks reach its disk up to
        100 ms later; with limits retention the message itself is still there), so its
        task's record is read before it is leased (a stale one is dropped)."""
        marks = {}
        for name, kept in zip(self.works, self._kept, strict=True):
            if kept:
                marks[name] = int((await self.js.stream_info(name)).state.last_seq)
        self._fresh = marks

    def _rejoined(self) -> None:
        """The connection is back: note the kept streams' last sequences again (first
        deliveries are read before being leased until then)."""

        async def mark() -> None:
            for _ in range(50):
                try:
                    await self._mark_fresh()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:  # (not quite back yet)
                    await asyncio.sleep(0.2)
            log.warning("queue.jetstream_rejoin_unmarked", note="first deliveries read first")

        if any(self._kept):
            self._background.append(asyncio.create_task(mark()))

    # ------------------------------------------------------------ compaction

    async def _compact_loop(self) -> None:
        """``compact`` the kept work streams every ``compact_interval`` seconds."""
        marks: dict[str, int] = {}
        while not self._closing and not self.nc.is_closed:
            await asyncio.sleep(self.compact_interval)
            try:
                marks = await self.compact(marks)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # (reconnecting, closing): the next pass tries again
                if not self._closing:
                    log.debug("queue.jetstream_compact_failed", error=repr(exc))

    async def compact(self, marks: dict[str, int] | None = None) -> dict[str, int]:
        """One pass over the kept work streams (limits retention: an ack deletes nothing):
        purge each below the mark the previous pass found (``marks``: stream -> sequence) and
        return this pass's marks.

        A stream's mark is the first sequence a consumer may still need: the least of its
        consumers' ack floors + 1 among those holding messages (not delivered yet, or unacked:
        a lease, a retry waiting under a nak), else its last sequence + 1 (read before the
        consumers: a message stored after it is above it). A message past max deliveries
        leaves its consumer's pending set (the ack floor moves over it) while its advisory is
        on its way to a backend, which reads the message to dead-letter the task: so a pass
        purges only what the previous one marked, and only when no advisory waits in
        ``P_ADVISORIES``."""
        waiting = (await self.js.stream_info(self.advisories)).state.messages
        out: dict[str, int] = {}
        for name, kept in zip(self.works, self._kept, strict=True):
            if not kept:
                continue
            state = (await self.js.stream_info(name)).state
            mark = int(state.last_seq) + 1
            for consumer in await self._consumers(name):
                if consumer.get("num_pending") or consumer.get("num_ack_pending"):
                    floor = int((consumer.get("ack_floor") or {}).get("stream_seq", 0))
                    mark = min(mark, floor + 1)
            out[name] = mark
            before = (marks or {}).get(name, 0)
            if before <= int(state.first_seq):
                continue  # (nothing below the mark left)
            if waiting:
                log.debug("queue.jetstream_compaction_waits", stream=name, advisories=waiting)
                continue
            with tracer.start_as_current_span(
                "routing.queue.compact", attributes={"stream": name, "below": before}
            ):
                await self.js.purge_stream(name, seq=before)
            METRICS.tasks["jetstream_compactions"] += 1
            log.debug("queue.jetstream_compacted", stream=name, below=before)
        return out

    async def _consumers(self, stream: str) -> Sequence[dict[str, Any]]:
        """Every consumer of ``stream`` (its info: ack floor, pending counts), all pages."""
        out: _Infos = []
        while True:
            reply = await self.nc.request(
                f"$JS.API.CONSUMER.LIST.{stream}",
                json.dumps({"offset": len(out)}).encode(),
                timeout=5.0,
            )
            page = json.loads(reply.data)
            if "error" in page:
                from nats.js.errors import APIError

                raise APIError.from_error(page["error"])
            got = page.get("consumers") or []
            out += got
            if not got or len(out) >= int(page.get("total", 0)):
                return out

    async def close(self) -> None:
        self._closing = True
        for flush in list(self._flushes):
            flush.cancel()
        with contextlib.suppress(Exception):  # the leases still held: recorded before we go
            await asyncio.gather(*(self._write_lease(i) for i in list(self._pending)))
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            await self.nc.close()


async def _sync_always(varz: str) -> bool | None:
    """Whether the server at ``varz`` (its monitoring endpoint) fsyncs every JetStream write;
    None when that cannot be read."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=3.0) as client:
            reply = await client.get(varz)
            reply.raise_for_status()
            config = reply.json().get("jetstream", {}).get("config", {})
    except Exception:
        return None
    if not config:
        return None
    return bool(config.get("sync_always", False))
