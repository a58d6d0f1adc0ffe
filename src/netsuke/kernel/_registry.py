"""Registry: names for processes, with metadata, pattern queries and pub/sub dispatch.

A registry maps keys to local processes, in one of two modes, fixed at creation:

* ``keys="unique"`` (the node's name registry is one): a key names at most one process.
  Registering a taken key raises ``AlreadyStartedError`` carrying the holder's pid.
* ``keys="duplicate"``: a key names any number of processes (a topic). ``dispatch`` sends a
  message to every process under a key: the pub/sub of Elixir's Registry.

Every entry carries a metadata value (default ``None``). Entries are removed when their process
exits, before its links and monitors are told, so a ``Down`` handler already sees the name free.

Registration is atomic. The kernel is single-threaded and registering never awaits, so of two
concurrent registrations of one unique key exactly one wins and the other learns the winner.

Registering a key a process already holds: in a unique registry it raises
``AlreadyStartedError`` with the caller's own pid (Elixir's ``{:error, {:already_registered,
self}}``; use ``update_meta``); in a duplicate registry it *adds* a second entry, which
``lookup`` lists and ``dispatch`` reaches twice. ``unregister(key, pid)`` removes every entry of
``pid`` under ``key``; ``unregister_match(key, pid, where)`` only those whose metadata passes
``where``.

Queries: ``whereis``/``lookup``/``values`` by key; ``match`` by glob pattern (``fnmatch``
syntax), by ``prefix`` and by metadata (a dict of required items, or a predicate); ``select``
with any predicate over ``(key, pid, meta)``; ``count`` of entries. Queries other than by key
scan the registry: O(entries).

Options (keyword, defaults in brackets): ``keys`` [``"unique"``]; ``name`` [``"registry"``, a
non-empty ``str``]; ``listeners`` [none]: targets (pids or names) that get
``Registered(registry, key, pid, meta)`` on every registration and ``Unregistered(registry, key,
pid)`` on every explicit ``unregister``/``unregister_match`` (not when a process exits: monitor
it for that, as in Elixir); ``meta`` [none]: registry-level metadata, read with ``get_meta`` and
changed with ``put_meta``/``delete_meta`` (Elixir's ``Registry.meta/put_meta/delete_meta``).

``await registry.lock(key, fn)`` runs ``fn()`` (a function or coroutine function) while holding
the lock ``key`` of this registry: calls with one key run one at a time, in arrival order;
different keys do not wait for each other. A holder or waiter that is cancelled (its process
killed) gives the lock up. Returns what ``fn`` returns.

Bad arguments raise ``ArgumentError`` (a ``UsageError``): an unknown ``keys`` mode, a name that
is not a non-empty ``str``, a ``select`` predicate that is not callable, a ``where`` that is
neither a dict nor a callable, a pattern that is not a ``str``, a ``Via`` over something that is
not a unique-keys ``Registry``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from ._errors import AlreadyStartedError, ArgumentError, NoProcessError
from ._pid import Pid

if TYPE_CHECKING:
    from ._process import Process
    from ._runtime import Runtime

__all__ = ["Registered", "Registry", "RegistryEntry", "Unregistered"]

Keys = Literal["unique", "duplicate"]
T = TypeVar("T")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Registered:
    """Sent to a registry's listeners: ``pid`` registered ``key`` with ``meta``."""

    registry: Registry
    key: Any
    pid: Pid
    meta: Any


@dataclass(frozen=True, slots=True)
class Unregistered:
    """Sent to a registry's listeners: ``pid`` unregistered ``key``."""

    registry: Registry
    key: Any
    pid: Pid


class _Many(list[Any]):
    """The metadata of several entries of one process under one key (duplicate registries)."""

    __slots__ = ()


def _metas(m: Any) -> list[Any] | tuple[Any]:
    return m if type(m) is _Many else (m,)


class RegistryEntry(NamedTuple):
    key: Any
    pid: Pid
    meta: Any


MetaFilter = dict[str, Any] | Callable[[Any], bool] | None


def _check_where(where: object) -> None:
    if where is not None and not callable(where) and not isinstance(where, dict):
        raise ArgumentError(f"where must be a dict of metadata items or a predicate: {where!r}")


def _meta_ok(meta: Any, where: MetaFilter) -> bool:
    if where is None:
        return True
    if callable(where):
        return bool(where(meta))
    if not isinstance(meta, dict):
        return False
    return all(k in meta and meta[k] == v for k, v in where.items())


class Registry:
    """A registry of local processes. See the module documentation."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        keys: Keys = "unique",
        name: str = "registry",
        listeners: Iterable[Any] = (),
        meta: Mapping[Any, Any] | None = None,
    ) -> None:
        from ._runtime import Runtime

        if not isinstance(runtime, Runtime):
            raise ArgumentError(f"a Registry needs a Runtime, not {runtime!r}")
        if keys not in ("unique", "duplicate"):
            raise ArgumentError(f"keys must be 'unique' or 'duplicate', not {keys!r}")
        if type(name) is not str or not name:
            raise ArgumentError(f"a registry name must be a non-empty str, not {name!r}")
        if isinstance(listeners, str | bytes) or not isinstance(listeners, Iterable):
            raise ArgumentError(f"listeners must be a list of targets, not {listeners!r}")
        if meta is not None and not isinstance(meta, Mapping):
            raise ArgumentError(f"meta must be a mapping, not {meta!r}")
        self.runtime = runtime
        self.keys_mode: Keys = keys
        self.name = name
        self.listeners: tuple[Any, ...] = tuple(listeners)
        # unique: key -> Process, or (Process, meta) when meta is not None
        self._unique: dict[Any, Any] = {}
        # duplicate: key -> {Process: meta, or _Many([meta, ...]) for several entries}
        self._dup: dict[Any, dict[Process, Any]] = {}
        self._meta: dict[Any, Any] = dict(meta) if meta is not None else {}
        self._locks: dict[Any, list[Any]] = {}  # key -> [asyncio.Lock, users]

    def __repr__(self) -> str:
        return f"<Registry {self.name} keys={self.keys_mode} entries={len(self)}>"

    def __len__(self) -> int:
        if self.keys_mode == "unique":
            return len(self._unique)
        return sum(
            len(m) if type(m) is _Many else 1 for d in self._dup.values() for m in d.values()
        )

    # ----------------------------------------------------------- registration

    def register(self, key: Hashable, pid: Pid, meta: Any = None) -> None:
        """Register local process ``pid`` under ``key`` with ``meta``.

        Raises ``AlreadyStartedError`` (unique keys: the key is taken, also by ``pid`` itself;
        ``update_meta`` changes metadata), ``NoProcessError`` (no such live local process). In
        a duplicate registry a second registration of one key by one process adds an entry."""
        proc = self.runtime._local_proc(pid)
        if proc is None:
            raise NoProcessError(pid)
        self._register(key, proc, meta)

    def _register(self, key: Any, proc: Process, meta: Any) -> None:
        if self.keys_mode == "unique":
            cur = self._unique.get(key)
            if cur is not None:
                holder = cur[0] if type(cur) is tuple else cur
                raise AlreadyStartedError(key, holder.pid)
            self._unique[key] = proc if meta is None else (proc, meta)
        else:
            d = self._dup.get(key)
            if d is None:
                d = self._dup[key] = {}
            if proc in d:
                cur = d[proc]
                if type(cur) is _Many:
                    cur.append(meta)
                else:
                    d[proc] = _Many((cur, meta))
                if self.listeners:
                    self._notify(Registered(self, key, proc.pid, meta))
                return
            d[proc] = meta
        self._remember(proc, key)
        if self.listeners:
            self._notify(Registered(self, key, proc.pid, meta))

    def _notify(self, message: Any) -> None:
        rt = self.runtime
        for target in self.listeners:
            p = rt._resolve(target)
            if p is not None:
                p._deliver(message)

    def _remember(self, proc: Process, key: Any) -> None:
        # The node's own name registry stores a plain str key in the process (no allocation);
        # everything else goes into a list of (registry, key).
        cur = proc._reg
        if cur is None and self is self.runtime.registry and type(key) is str:
            proc._reg = key
            return
        if cur is None:
            proc._reg = [(self, key)]
        elif type(cur) is str:
            proc._reg = [(self.runtime.registry, cur), (self, key)]
        else:
            cur.append((self, key))

    def unregister(self, key: Hashable, pid: Pid) -> bool:
        """Remove every entry of ``pid`` under ``key``; returns whether there was one."""
        proc = self.runtime._local_proc(pid)
        if proc is None:
            return False
        if not self._drop(key, proc):
            return False
        self._forget(proc, key)
        if self.listeners:
            self._notify(Unregistered(self, key, proc.pid))
        return True

    def _forget(self, proc: Process, key: Any) -> None:
        cur = proc._reg
        if type(cur) is str:
            proc._reg = None
        elif cur is not None:
            cur[:] = [e for e in cur if not (e[0] is self and e[1] == key)]

    def unregister_match(self, key: Hashable, pid: Pid, where: MetaFilter) -> int:
        """Elixir's ``unregister_match``: remove the entries of ``pid`` under ``key`` whose
        metadata passes ``where`` (a dict of required items, or a predicate); returns how
        many went."""
        if where is None:
            raise ArgumentError("unregister_match needs where (a dict or a predicate)")
        _check_where(where)
        proc = self.runtime._local_proc(pid)
        if proc is None or not self._holds(key, proc):
            return 0
        if self.keys_mode == "unique":
            cur = self._unique[key]
            if not _meta_ok(cur[1] if type(cur) is tuple else None, where):
                return 0
            self._drop(key, proc)
            n = 1
        else:
            d = self._dup[key]
            metas = _metas(d[proc])
            keep = [m for m in metas if not _meta_ok(m, where)]
            n = len(metas) - len(keep)
            if not n:
                return 0
            if keep:
                d[proc] = keep[0] if len(keep) == 1 else _Many(keep)
                if self.listeners:
                    self._notify(Unregistered(self, key, proc.pid))
                return n
            self._drop(key, proc)
        self._forget(proc, key)
        if self.listeners:
            self._notify(Unregistered(self, key, proc.pid))
        return n

    def update_meta(self, key: Hashable, pid: Pid, meta: Any) -> None:
        """Replace the metadata of ``pid``'s entry under a unique ``key`` (Elixir's
        ``update_value``). Raises ``NoProcessError`` when ``pid`` does not hold ``key``,
        ``ArgumentError`` on a duplicate registry (as Elixir, which has no update there)."""
        if self.keys_mode != "unique":
            raise ArgumentError("update_meta is not supported by duplicate registries")
        proc = self.runtime._local_proc(pid)
        if proc is None or not self._holds(key, proc):
            raise NoProcessError(pid)
        self._unique[key] = proc if meta is None else (proc, meta)

    def _holds(self, key: Any, proc: Process) -> bool:
        if self.keys_mode == "unique":
            cur = self._unique.get(key)
            return cur is not None and (cur[0] if type(cur) is tuple else cur) is proc
        d = self._dup.get(key)
        return d is not None and proc in d

    def _drop(self, key: Any, proc: Process) -> bool:
        if self.keys_mode == "unique":
            cur = self._unique.get(key)
            if cur is None or (cur[0] if type(cur) is tuple else cur) is not proc:
                return False
            del self._unique[key]
            return True
        d = self._dup.get(key)
        if d is None or proc not in d:
            return False
        del d[proc]
        if not d:
            del self._dup[key]
        return True

    # --------------------------------------------------------------- lookups

    def _whereis_proc(self, key: Any) -> Process | None:
        cur = self._unique.get(key)
        if cur is None:
            return None
        return cur[0] if type(cur) is tuple else cur  # type: ignore[no-any-return]

    def whereis(self, key: Hashable) -> Pid | None:
        """The pid under a unique ``key``, or ``None``."""
        if self.keys_mode != "unique":
            raise TypeError("whereis needs a unique-keys registry; use lookup")
        p = self._whereis_proc(key)
        return None if p is None else p.pid

    def lookup(self, key: Hashable) -> list[tuple[Pid, Any]]:
        """Every ``(pid, meta)`` under ``key`` (at most one for unique keys)."""
        if self.keys_mode == "unique":
            cur = self._unique.get(key)
            if cur is None:
                return []
            if type(cur) is tuple:
                return [(cur[0].pid, cur[1])]
            return [(cur.pid, None)]
        d = self._dup.get(key)
        if d is None:
            return []
        return [(p.pid, m) for p, ms in d.items() for m in _metas(ms)]

    def values(self, key: Hashable, pid: Pid) -> list[Any]:
        """The metadata of every entry of ``pid`` under ``key`` (Elixir's ``values/3``)."""
        proc = self.runtime._local_proc(pid)
        if proc is None or not self._holds(key, proc):
            return []
        if self.keys_mode == "unique":
            cur = self._unique[key]
            return [cur[1] if type(cur) is tuple else None]
        return list(_metas(self._dup[key][proc]))

    def meta(self, key: Hashable) -> Any:
        """The metadata under a unique ``key``; raises ``KeyError`` when it is not registered."""
        cur = self._unique.get(key)
        if cur is None:
            raise KeyError(key)
        return cur[1] if type(cur) is tuple else None

    def keys(self, pid: Pid) -> list[Any]:
        """The keys ``pid`` is registered under in this registry (a key once per entry)."""
        proc = self.runtime._local_proc(pid)
        if proc is None:
            return []
        cur = proc._reg
        if cur is None:
            return []
        if type(cur) is str:
            return [cur] if self is self.runtime.registry else []
        if self.keys_mode == "unique":
            return [k for r, k in cur if r is self]
        return [k for r, k in cur if r is self for _ in _metas(self._dup[k][proc])]

    def _entries(self) -> Iterator[tuple[Any, Process, Any]]:
        if self.keys_mode == "unique":
            for k, cur in list(self._unique.items()):
                if type(cur) is tuple:
                    yield k, cur[0], cur[1]
                else:
                    yield k, cur, None
        else:
            for k, d in list(self._dup.items()):
                for p, ms in list(d.items()):
                    for m in _metas(ms):
                        yield k, p, m

    def select(self, predicate: Callable[[Any, Pid, Any], bool]) -> list[RegistryEntry]:
        """Every entry for which ``predicate(key, pid, meta)`` is true (Elixir's ``select``
        with a match spec; raises ``ArgumentError`` when ``predicate`` is not callable)."""
        if not callable(predicate):
            raise ArgumentError(f"select needs a predicate(key, pid, meta), not {predicate!r}")
        out = []
        for k, p, m in self._entries():
            pid = p.pid
            if predicate(k, pid, m):
                out.append(RegistryEntry(k, pid, m))
        return out

    def match(
        self,
        pattern: str | None = None,
        *,
        prefix: str | None = None,
        contains: str | None = None,
        where: MetaFilter = None,
    ) -> list[RegistryEntry]:
        """Entries whose ``str`` key matches the glob ``pattern`` (``*``, ``?``, ``[seq]``),
        starts with ``prefix`` and contains ``contains`` (each when given), and whose metadata
        passes ``where`` (a dict of required items, or a predicate). Non-``str`` keys match only
        when neither a pattern, a prefix nor ``contains`` is given."""
        for label, v in (("pattern", pattern), ("prefix", prefix), ("contains", contains)):
            if v is not None and type(v) is not str:
                raise ArgumentError(f"{label} must be a str, not {v!r}")
        _check_where(where)
        rx = re.compile(fnmatch.translate(pattern)) if pattern is not None else None
        textual = rx is not None or prefix is not None or contains is not None
        out = []
        for k, p, m in self._entries():
            if textual:
                if type(k) is not str:
                    continue
                if prefix is not None and not k.startswith(prefix):
                    continue
                if contains is not None and contains not in k:
                    continue
                if rx is not None and rx.match(k) is None:
                    continue
            if not _meta_ok(m, where):
                continue
            out.append(RegistryEntry(k, p.pid, m))
        return out

    def count(
        self,
        pattern: str | None = None,
        *,
        prefix: str | None = None,
        contains: str | None = None,
        where: MetaFilter = None,
    ) -> int:
        """The number of entries ``match`` would return (``len(registry)`` with no filter)."""
        if pattern is None and prefix is None and contains is None and where is None:
            return len(self)
        return len(self.match(pattern, prefix=prefix, contains=contains, where=where))

    def dispatch(self, key: Hashable, message: Any) -> int:
        """Send ``message`` to every process under ``key``; returns how many got it."""
        if self.keys_mode == "unique":
            p = self._whereis_proc(key)
            procs = [] if p is None else [p]
        else:
            d = self._dup.get(key)
            procs = [] if d is None else [p for p, ms in d.items() for _ in _metas(ms)]
        for p in procs:
            p._deliver(message)
        return len(procs)

    # ------------------------------------------------- registry-level metadata

    def get_meta(self, key: Hashable, default: Any = _MISSING) -> Any:
        """Registry-level metadata under ``key`` (Elixir's ``Registry.meta/2``); ``default``
        when it is missing, or ``KeyError`` without a default."""
        try:
            return self._meta[key]
        except KeyError:
            if default is _MISSING:
                raise
            return default

    def put_meta(self, key: Hashable, value: Any) -> None:
        """Set registry-level metadata (Elixir's ``Registry.put_meta/3``)."""
        self._meta[key] = value

    def delete_meta(self, key: Hashable) -> None:
        """Remove registry-level metadata; a missing key is fine (``Registry.delete_meta/2``)."""
        self._meta.pop(key, None)

    # ------------------------------------------------------------------ lock

    async def lock(self, key: Hashable, fn: Callable[[], Awaitable[T] | T]) -> T:
        """Run ``fn()`` holding this registry's lock ``key`` (Elixir's ``Registry.lock/3``);
        see the module documentation."""
        if not callable(fn):
            raise ArgumentError(f"lock needs a function, not {fn!r}")
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                r = fn()
                if inspect.isawaitable(r):
                    r = await r
                return r
        finally:
            entry[1] -= 1
            if not entry[1] and self._locks.get(key) is entry:
                del self._locks[key]
