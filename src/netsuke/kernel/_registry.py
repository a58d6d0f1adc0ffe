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

Queries: ``whereis``/``lookup`` by key; ``match`` by glob pattern (``fnmatch`` syntax), by
``prefix`` and by metadata (a dict of required items, or a predicate); ``select`` with any
predicate over ``(key, pid, meta)``; ``count`` of entries. Queries other than by key scan the
registry: O(entries).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import AlreadyStartedError, NoProcessError
from ._pid import Pid

if TYPE_CHECKING:
    from ._process import Process
    from ._runtime import Runtime

__all__ = ["Registry", "RegistryEntry"]

Keys = Literal["unique", "duplicate"]


class RegistryEntry(NamedTuple):
    key: Any
    pid: Pid
    meta: Any


MetaFilter = dict[str, Any] | Callable[[Any], bool] | None


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

    def __init__(self, runtime: Runtime, *, keys: Keys = "unique", name: str = "registry") -> None:
        if keys not in ("unique", "duplicate"):
            raise ValueError(f"keys must be 'unique' or 'duplicate', not {keys!r}")
        self.runtime = runtime
        self.keys_mode: Keys = keys
        self.name = name
        # unique: key -> Process, or (Process, meta) when meta is not None
        self._unique: dict[Any, Any] = {}
        # duplicate: key -> {Process: meta}
        self._dup: dict[Any, dict[Process, Any]] = {}

    def __repr__(self) -> str:
        return f"<Registry {self.name} keys={self.keys_mode} entries={len(self)}>"

    def __len__(self) -> int:
        if self.keys_mode == "unique":
            return len(self._unique)
        return sum(len(d) for d in self._dup.values())

    # ----------------------------------------------------------- registration

    def register(self, key: Hashable, pid: Pid, meta: Any = None) -> None:
        """Register local process ``pid`` under ``key`` with ``meta``.

        Raises ``AlreadyStartedError`` (unique keys, key taken by another process; re-registering
        the same process updates its metadata), ``NoProcessError`` (no such live local process).
        """
        proc = self.runtime._local_proc(pid)
        if proc is None:
            raise NoProcessError(pid)
        self._register(key, proc, meta)

    def _register(self, key: Any, proc: Process, meta: Any) -> None:
        if self.keys_mode == "unique":
            cur = self._unique.get(key)
            if cur is not None:
                holder = cur[0] if type(cur) is tuple else cur
                if holder is not proc:
                    raise AlreadyStartedError(key, holder.pid)
                self._unique[key] = proc if meta is None else (proc, meta)
                return
            self._unique[key] = proc if meta is None else (proc, meta)
        else:
            d = self._dup.get(key)
            if d is None:
                d = self._dup[key] = {}
            if proc in d:
                d[proc] = meta
                return
            d[proc] = meta
        self._remember(proc, key)

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
        """Remove ``pid``'s entry under ``key``; returns whether there was one."""
        proc = self.runtime._local_proc(pid)
        if proc is None:
            return False
        if not self._drop(key, proc):
            return False
        cur = proc._reg
        if type(cur) is str:
            proc._reg = None
        elif cur is not None:
            cur[:] = [e for e in cur if not (e[0] is self and e[1] == key)]
        return True

    def update_meta(self, key: Hashable, pid: Pid, meta: Any) -> None:
        """Replace the metadata of ``pid``'s entry under ``key``."""
        proc = self.runtime._local_proc(pid)
        if proc is None or not self._holds(key, proc):
            raise NoProcessError(pid)
        self._register(key, proc, meta)

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
        return [] if d is None else [(p.pid, m) for p, m in d.items()]

    def meta(self, key: Hashable) -> Any:
        """The metadata under a unique ``key``; raises ``KeyError`` when it is not registered."""
        cur = self._unique.get(key)
        if cur is None:
            raise KeyError(key)
        return cur[1] if type(cur) is tuple else None

    def keys(self, pid: Pid) -> list[Any]:
        """The keys ``pid`` is registered under in this registry."""
        proc = self.runtime._local_proc(pid)
        if proc is None:
            return []
        cur = proc._reg
        if cur is None:
            return []
        if type(cur) is str:
            return [cur] if self is self.runtime.registry else []
        return [k for r, k in cur if r is self]

    def _entries(self) -> Iterator[tuple[Any, Process, Any]]:
        if self.keys_mode == "unique":
            for k, cur in list(self._unique.items()):
                if type(cur) is tuple:
                    yield k, cur[0], cur[1]
                else:
                    yield k, cur, None
        else:
            for k, d in list(self._dup.items()):
                for p, m in list(d.items()):
                    yield k, p, m

    def select(self, predicate: Callable[[Any, Pid, Any], bool]) -> list[RegistryEntry]:
        """Every entry for which ``predicate(key, pid, meta)`` is true."""
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
            procs = [] if d is None else list(d)
        for p in procs:
            p._deliver(message)
        return len(procs)
