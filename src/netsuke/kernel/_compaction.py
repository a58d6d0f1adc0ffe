"""Giving memory back after a burst: the node's tables shrink when they fall far below their peak.

Python dicts and sets keep their capacity after deletions: a node that once held 100k processes
keeps the hash-table capacity of its process table, name table, active set and the link set of
the supervisor of those processes, even after all of them are gone. The hibernation sweep
(``Runtime.hibernate_sweep``, every 0.5 s by default) calls :func:`compact_tables`, which
rebuilds a table at its current size when it holds fewer than a quarter (``SHRINK_BELOW``) of
its high-water mark and that mark was at least ``MIN_PEAK`` (1,024) entries. Tables watched:

* the process table and the set of active processes of the runtime;
* the unique-key and duplicate-key tables of the node registry (``rt.registry``);
* the link set of any process that once had ``MIN_PEAK`` links or more (a supervisor of a burst
  of children; noted when its set reaches a power of two from ``MIN_PEAK`` on).

High-water marks are the largest sizes seen at sweeps (and, for link sets, at every power of
two); after a rebuild the mark restarts from the current size. A rebuild happens between two
callbacks of the event loop, never while a table is being iterated; each one counts in
``rt.stats.compactions``. Nothing else changes: same keys, same values, same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._process import Process
    from ._runtime import Runtime

__all__ = ["MIN_PEAK", "SHRINK_BELOW", "TableWatch", "compact_tables"]

MIN_PEAK = 1024
SHRINK_BELOW = 4


class TableWatch:
    """High-water marks of a runtime's tables (see the module documentation)."""

    __slots__ = ("big_links", "peaks")

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.big_links: dict[Process, int] = {}

    def note_links(self, p: Process, n: int) -> None:
        """Called by ``_add_link`` when ``p``'s link set reaches ``n`` (a power of two >=
        ``MIN_PEAK``)."""
        if n > self.big_links.get(p, 0):
            self.big_links[p] = n


def _shrink(watch: TableWatch, key: str, size: int) -> bool:
    """Whether the table ``key`` of ``size`` entries should be rebuilt now (updates its mark)."""
    peaks = watch.peaks
    peak = peaks.get(key, 0)
    if size > peak:
        peaks[key] = size
        return False
    if peak >= MIN_PEAK and size * SHRINK_BELOW < peak:
        peaks[key] = size
        return True
    return False


def compact_tables(rt: Runtime) -> int:
    """Rebuild the tables of ``rt`` that fell far below their peak; returns how many."""
    from ._process import F_DEAD

    watch: TableWatch = rt._watch
    n = 0
    if _shrink(watch, "procs", len(rt._procs)):
        rt._procs = dict(rt._procs)
        n += 1
    if _shrink(watch, "active", len(rt._active)):
        rt._active = set(rt._active)
        n += 1
    reg = rt.registry
    if _shrink(watch, "names", len(reg._unique)):
        reg._unique = dict(reg._unique)
        rt._names = reg._unique
        n += 1
    if _shrink(watch, "names_dup", len(reg._dup)):
        reg._dup = dict(reg._dup)
        n += 1
    big = watch.big_links
    if big:
        for p, peak in list(big.items()):
            ls: Any = p._links
            if p._flags & F_DEAD or type(ls) is not set:
                del big[p]
                continue
            size = len(ls)
            if size * SHRINK_BELOW < peak:
                p._links = set(ls)
                n += 1
                if size < MIN_PEAK:
                    del big[p]
                else:
                    big[p] = size
    rt.stats.compactions += n
    return n
