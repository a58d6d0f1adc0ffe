"""The cyclic garbage collector's settings for a ``netsuke serve`` process.

Under load, what a chat request costs the collector is mostly its *full* collections: each one
walks every tracked object of the process, and before tuning a node held about 230,000 of them
(modules, classes, functions, the app's routes), almost all made at start-up and never garbage.
A young collection moves the objects of the requests then in flight into the older
generations, and once enough have moved, a full collection runs: with the default thresholds,
about one per 200 chat requests, each walking the whole heap (``benchmarks/api_cost.py``
measured 0.6-0.8 ms of CPU per request on full collections, of a request's 4-5 ms).

``tune_gc`` (called by ``serve`` once the node is open and its app is built, before it is
announced) does two things, each a setting (``Settings.gc_freeze``, ``Settings.gc_threshold``):

* ``gc.collect()`` then ``gc.freeze()``: everything made so far goes to the permanent
  generation, which collections never walk;
* ``gc.set_threshold(gc_threshold, ...)``: fewer young collections, so fewer in-flight objects
  promoted to the old generation and fewer full collections.

Embedding ``create_app`` in another process changes nothing: the process that owns the loop
owns its collector's settings.
"""

from __future__ import annotations

import gc

from prometheus_client import Gauge

from ..api import Settings
from ..observability import REGISTRY, get_logger

__all__ = ["GC_FROZEN", "tune_gc"]

log = get_logger("netsuke.cli")

GC_FROZEN = Gauge(
    "netsuke_gc_frozen_objects",
    "Objects moved out of the cyclic garbage collector's sight at start-up (gc.freeze)",
    registry=REGISTRY,
)


def tune_gc(settings: Settings) -> dict[str, int]:
    """Apply ``settings.gc_freeze`` and ``settings.gc_threshold`` to this process's collector;
    returns what was done (``frozen``: objects frozen now; ``threshold``: the first threshold
    in force), also logged as ``serve.gc_tuned`` and counted in ``netsuke_gc_frozen_objects``."""
    if settings.gc_threshold:
        _, second, third = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, second, third)
    frozen = 0
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    GC_FROZEN.set(frozen)
    done = {"frozen": frozen, "threshold": gc.get_threshold()[0]}
    log.info("serve.gc_tuned", **done)
    return done
