"""The interpreter's settings for a ``netsuke serve`` process: garbage collector, GIL switching.

**Garbage collector.** Under load, what a chat request costs the cyclic collector is mostly its
*full* collections: each one walks every tracked object of the process, and a node holds about
230,000 of them (modules, classes, functions, the app's routes), almost all made at start-up
and never garbage. A young collection moves the objects of the requests then in flight into
the older generations, and once enough have moved, a full collection runs: with Python's
thresholds, about one per 200 chat requests, each walking the whole heap
(``benchmarks/api_cost.py``: 0.6-0.8 ms of CPU per request on full collections, of a
request's 4-5 ms). So, once the node is open and its app built:

* ``gc.collect()`` then ``gc.freeze()`` (``Settings.gc_freeze``): everything made so far goes
  to the permanent generation, which collections never walk;
* ``gc.set_threshold(gc_threshold, ...)`` (``Settings.gc_threshold``): fewer young
  collections, so fewer in-flight objects promoted and fewer full collections.

**GIL switching** (``Settings.switch_interval_ms``, ``sys.setswitchinterval``; off by
default). The store's writer thread hands the GIL back around every SQLite statement of a
group commit (seven or so per batch); to take it again while the event loop runs, it waits
until the loop drops it, at worst for the switch interval (Python's 5 ms). A shorter interval
shortens each batch's commit, so the replies waiting for it (1 ms: about half, measured in
process under load); but the batches get smaller, so a request pays a larger share of a
commit's fsync (about 0.3 ms of CPU each on the benchmark machine), and CPU per request is
what the throughput target needs. Python's interval is kept unless the setting asks.

**Core** (``serve --nodes`` with ``Settings.nodes_pin``): the supervisor names a core for each
node (``NETSUKE_NODE_CPU``) and the node pins every thread it has to it
(``sched_setaffinity`` per thread; threads started later inherit it from their creator).

``create_app`` embedded in another process changes none of this: the process that owns the
loop owns its interpreter's settings.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from prometheus_client import Gauge

from ..api import Settings
from ..observability import REGISTRY, get_logger

__all__ = ["CPU_ENV", "GC_FROZEN", "pin_threads", "tune_process"]

CPU_ENV = "NETSUKE_NODE_CPU"
"""The core ``serve --nodes`` gives a node to run on (``Settings.nodes_pin``)."""

log = get_logger("netsuke.cli")

GC_FROZEN = Gauge(
    "netsuke_gc_frozen_objects",
    "Objects moved out of the cyclic garbage collector's sight at start-up (gc.freeze)",
    registry=REGISTRY,
)


def tune_process(settings: Settings) -> dict[str, Any]:
    """Apply ``settings.gc_freeze``, ``gc_threshold`` and ``switch_interval_ms`` to this
    process, and the core ``serve --nodes`` named for it (``NETSUKE_NODE_CPU``); returns what
    is in force (``frozen``: objects frozen now; ``threshold``: the collector's first
    threshold; ``switch_interval_ms``; ``cpu``: the core, when pinned), also logged as
    ``serve.tuned`` and counted in ``netsuke_gc_frozen_objects``."""
    if settings.gc_threshold:
        _, second, third = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, second, third)
    if settings.switch_interval_ms:
        sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    frozen = 0
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    GC_FROZEN.set(frozen)
    done: dict[str, Any] = {
        "frozen": frozen,
        "threshold": gc.get_threshold()[0],
        "switch_interval_ms": round(sys.getswitchinterval() * 1000.0, 3),
    }
    if core := os.environ.get(CPU_ENV):
        done["cpu"] = pin_threads(int(core))
    log.info("serve.tuned", **done)
    return done


def pin_threads(core: int) -> int | None:
    """Run every thread of this process on ``core`` from now on (threads started later inherit
    it from the thread that starts them): the core, or ``None`` when this system cannot
    (no ``sched_setaffinity``, a core outside this process's set: logged, nothing changed)."""
    if not hasattr(os, "sched_setaffinity") or core not in os.sched_getaffinity(0):
        log.warning("serve.pin_refused", cpu=core)
        return None
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {core})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return core
