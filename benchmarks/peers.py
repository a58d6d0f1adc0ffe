"""Peer comparison: autogen-core and pykka against raw asyncio floors.

Three figures per library, all measured in one run:

* spawn rate: create N actors and register each under a name/id (per second);
* memory per idle actor holding a 100-byte state (RSS delta / N, each case in
  a fresh interpreter so deltas do not pollute each other);
* call round trips per second: one caller -> one actor sequentially, and
  1,000 callers -> 1,000 actors concurrently.

The raw floors are measured in the same run: a raw asyncio actor is a Task
blocked on an ``asyncio.Queue`` that receives ``(msg, future)`` and sets the
future's result; the "lean" floor (memory only) is a ``__slots__`` object
holding a waiter future and a deque, with no Task while idle.

pykka actors are OS threads, so pykka uses a smaller N for spawn/memory
(2,000; --quick: 500) and its floor is re-measured at that same N.

Other modules can add their own rows: ``peer_figures(quick)`` and
``floor_figures(quick)`` are public, and ``main()`` appends Netsuke's figures
from ``benchmarks/kernel.py`` (``netsuke_peer_comparison``) when importable.

Usage::

    python benchmarks/peers.py [--quick] [--json]
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path, so benchmarks/queue.py never
# shadows the standard library's queue (used by asyncio, aiosqlite and the store's writer).
sys.path.append(sys.path.pop(0))

import asyncio
import gc
import inspect
import json
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    STATE_BYTES,
    Figure,
    loop_name,
    meta,
    parse_args,
    report,
    run_case,
    settled_rss,
)

SCRIPT = str(Path(__file__).resolve())
TARGET = "reference (peer)"
FLOOR_TARGET = "floor"


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; --quick shrinks them so the whole script runs in < 60 s."""

    n_actors: int  # spawn/memory N for asyncio-based actors
    n_threads: int  # spawn/memory N for pykka (one OS thread per actor)
    concurrency: int  # callers == actors in the concurrent call case
    seconds: float  # duration of each call-rate measurement
    repeats: int  # fresh processes / timed runs per figure (best / median taken)


QUICK = Sizes(n_actors=20_000, n_threads=500, concurrency=1_000, seconds=0.6, repeats=1)
FULL = Sizes(n_actors=100_000, n_threads=2_000, concurrency=1_000, seconds=2.0, repeats=3)


def sizes(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def new_state() -> bytes:
    """A fresh (non-shared) 100-byte state object."""
    return bytes(STATE_BYTES)


# --------------------------------------------------------------------------------------
# Raw asyncio floor: a Task blocked on an asyncio.Queue of (msg, future).
# --------------------------------------------------------------------------------------

Mailbox = asyncio.Queue[tuple[object, asyncio.Future[object]]]


async def _raw_actor(inbox: Mailbox, state: bytes) -> None:
    del state  # held by the frame for the actor's lifetime, like real state would be
    while True:
        msg, fut = await inbox.get()
        fut.set_result(msg)


@dataclass(slots=True)
class RawActor:
    inbox: Mailbox
    task: asyncio.Task[None]


def raw_spawn(registry: dict[str, RawActor], n: int) -> None:
    for i in range(n):
        inbox: Mailbox = asyncio.Queue()
        task = asyncio.create_task(_raw_actor(inbox, new_state()))
        registry[f"actor-{i}"] = RawActor(inbox, task)


async def raw_call(actor: RawActor, msg: object) -> object:
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    actor.inbox.put_nowait((msg, fut))
    return await fut


async def _stop_raw(registry: dict[str, RawActor]) -> None:
    for actor in registry.values():
        actor.task.cancel()
    await asyncio.gather(*(a.task for a in registry.values()), return_exceptions=True)


# --------------------------------------------------------------------------------------
# Lean floor (memory only): no Task while idle, just a waiter future and a deque.
# --------------------------------------------------------------------------------------


class LeanActor:
    __slots__ = ("mailbox", "name", "state", "waiter")

    def __init__(self, name: str, state: bytes, waiter: asyncio.Future[None]) -> None:
        self.name = name
        self.state = state
        self.waiter = waiter
        self.mailbox: deque[object] = deque()


def lean_spawn(registry: dict[str, LeanActor], n: int) -> None:
    loop = asyncio.get_running_loop()
    for i in range(n):
        name = f"actor-{i}"
        registry[name] = LeanActor(name, new_state(), loop.create_future())


# --------------------------------------------------------------------------------------
# autogen-core: SingleThreadedAgentRuntime.
# --------------------------------------------------------------------------------------


def _autogen_agent_class() -> type[Any]:
    from autogen_core import BaseAgent, MessageContext

    class EchoAgent(BaseAgent):
        def __init__(self, state: bytes) -> None:
            super().__init__("echo")
            self.state = state

        async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
            return message

    return EchoAgent


async def autogen_spawn_eager(runtime: Any, n: int) -> list[Any]:
    """Spawn = create the agent object and register it under an AgentId.

    ``register_agent_instance`` is autogen's explicit "create and name it now"
    path; it is the honest equivalent of the floor (a live, addressable actor, no
    message sent). The lazy path (factory + first message) is measured separately.
    """
    from autogen_core import AgentId

    agent_cls = _autogen_agent_class()
    ids = []
    for i in range(n):
        agent_id = AgentId("echo", f"actor-{i}")
        await runtime.register_agent_instance(agent_cls(new_state()), agent_id)
        ids.append(agent_id)
    return ids


async def autogen_spawn_lazy(runtime: Any, n: int, batch: int = 1_000) -> None:
    """Spawn = register a factory once, then the first message to each AgentId.

    autogen instantiates agents lazily on their first message, so the honest
    "spawn" of the usual user path includes that first round trip. Messages are
    sent ``batch`` at a time concurrently so call latency does not dominate.
    """
    from autogen_core import AgentId

    agent_cls = _autogen_agent_class()
    await runtime.register_factory("echo", lambda: agent_cls(new_state()))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        await asyncio.gather(
            *(runtime.send_message(i, AgentId("echo", f"actor-{i}")) for i in range(start, stop))
        )


def _autogen_runtime() -> Any:
    from autogen_core import SingleThreadedAgentRuntime

    runtime = SingleThreadedAgentRuntime()
    runtime.start()
    return runtime


# --------------------------------------------------------------------------------------
# pykka: ThreadingActor (one OS thread per actor).
# --------------------------------------------------------------------------------------


def _pykka_actor_class() -> type[Any]:
    import pykka

    class EchoActor(pykka.ThreadingActor):
        def __init__(self, state: bytes) -> None:
            super().__init__()
            self.state = state

        def on_receive(self, message: Any) -> Any:
            return message

    return EchoActor


def pykka_spawn(registry: dict[str, Any], n: int) -> None:
    actor_cls = _pykka_actor_class()
    for i in range(n):
        registry[f"actor-{i}"] = actor_cls.start(new_state())


def pykka_stop_all() -> None:
    import pykka

    pykka.ActorRegistry.stop_all()


# --------------------------------------------------------------------------------------
# Spawn + memory cases, each run in a fresh interpreter (``--case NAME --n N``).
# --------------------------------------------------------------------------------------


def _measure(spawn: Callable[[], object], n: int) -> dict[str, float]:
    """Time ``spawn`` (GC on) and take the settled RSS delta per actor."""
    before = settled_rss()
    start = time.perf_counter()
    spawn()
    took = time.perf_counter() - start
    after = settled_rss()
    return {"spawn_per_s": n / took, "bytes_per_actor": (after - before) / n}


async def _case_raw(n: int) -> dict[str, float]:
    registry: dict[str, RawActor] = {}
    before = settled_rss()
    start = time.perf_counter()
    raw_spawn(registry, n)
    await asyncio.sleep(0)  # every task runs to its first await: all idle on get()
    took = time.perf_counter() - start
    after = settled_rss()
    assert all(not a.task.done() for a in registry.values())
    result = {"spawn_per_s": n / took, "bytes_per_actor": (after - before) / n}
    await _stop_raw(registry)
    return result


async def _case_lean(n: int) -> dict[str, float]:
    registry: dict[str, LeanActor] = {}
    return _measure(lambda: lean_spawn(registry, n), n)


async def _case_autogen(n: int) -> dict[str, float]:
    runtime = _autogen_runtime()
    await asyncio.sleep(0)
    before = settled_rss()
    start = time.perf_counter()
    await autogen_spawn_eager(runtime, n)
    took = time.perf_counter() - start
    after = settled_rss()
    await runtime.stop()
    return {"spawn_per_s": n / took, "bytes_per_actor": (after - before) / n}


async def _case_autogen_lazy(n: int) -> dict[str, float]:
    runtime = _autogen_runtime()
    await asyncio.sleep(0)
    before = settled_rss()
    start = time.perf_counter()
    await autogen_spawn_lazy(runtime, n)
    took = time.perf_counter() - start
    after = settled_rss()
    await runtime.stop()
    return {"spawn_per_s": n / took, "bytes_per_actor": (after - before) / n}


async def _case_pykka(n: int) -> dict[str, float]:
    registry: dict[str, Any] = {}
    _pykka_actor_class()  # import pykka before the baseline is read
    result = _measure(lambda: pykka_spawn(registry, n), n)
    pykka_stop_all()
    return result


CASES: dict[str, Callable[[int], Coroutine[Any, Any, dict[str, float]]]] = {
    "raw": _case_raw,
    "lean": _case_lean,
    "autogen": _case_autogen,
    "autogen_lazy": _case_autogen_lazy,
    "pykka": _case_pykka,
}


def run_child_case(case: str, n: int) -> None:
    """Entry point of a fresh child process: print the case's JSON result."""
    loop_name()
    if case in {"autogen", "autogen_lazy"}:
        import autogen_core  # noqa: F401  (import cost stays out of the RSS delta)
    result = asyncio.run(CASES[case](n))
    print(json.dumps(result))


def spawn_case(case: str, n: int, repeats: int) -> dict[str, float]:
    """Best spawn rate and median bytes/actor over ``repeats`` fresh processes."""
    runs = [run_case(SCRIPT, case, n) for _ in range(repeats)]
    return {
        "spawn_per_s": max(r["spawn_per_s"] for r in runs),
        "bytes_per_actor": statistics.median(r["bytes_per_actor"] for r in runs),
    }


# --------------------------------------------------------------------------------------
# Call rates (in this process).
# --------------------------------------------------------------------------------------


async def seq_rate(call: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Sequential round trips per second from one caller, for at least ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(500):
            await call(i)
        done += 500
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def concurrent_rate(calls: list[Callable[[int], Awaitable[object]]], seconds: float) -> float:
    """Round trips per second with one caller task per target, all running together."""
    deadline = time.perf_counter() + seconds
    counts = [0] * len(calls)

    async def caller(idx: int, call: Callable[[int], Awaitable[object]]) -> None:
        n = 0
        while time.perf_counter() < deadline:
            for i in range(10):
                await call(i)
            n += 10
        counts[idx] = n

    start = time.perf_counter()
    await asyncio.gather(*(caller(i, c) for i, c in enumerate(calls)))
    return sum(counts) / (time.perf_counter() - start)


async def _best(measure: Callable[[float], Awaitable[float]], s: Sizes) -> float:
    """Warm up for a quarter of the duration, then the best of ``s.repeats`` runs."""
    await measure(s.seconds / 4)
    return max([await measure(s.seconds) for _ in range(s.repeats)])


async def raw_call_rates(s: Sizes) -> tuple[float, float]:
    registry: dict[str, RawActor] = {}
    raw_spawn(registry, s.concurrency)
    actors = list(registry.values())
    one = actors[0]
    seq = await _best(lambda d: seq_rate(lambda m: raw_call(one, m), d), s)
    calls = [_bind_raw(a) for a in actors]
    conc = await _best(lambda d: concurrent_rate(calls, d), s)
    await _stop_raw(registry)
    return seq, conc


def _bind_raw(actor: RawActor) -> Callable[[int], Awaitable[object]]:
    return lambda m: raw_call(actor, m)


async def autogen_call_rates(s: Sizes) -> tuple[float, float]:
    runtime = _autogen_runtime()
    ids = await autogen_spawn_eager(runtime, s.concurrency)
    first = ids[0]
    seq = await _best(lambda d: seq_rate(lambda m: runtime.send_message(m, first), d), s)
    calls = [_bind_autogen(runtime, agent_id) for agent_id in ids]
    conc = await _best(lambda d: concurrent_rate(calls, d), s)
    await runtime.stop()
    return seq, conc


def _bind_autogen(runtime: Any, agent_id: Any) -> Callable[[int], Awaitable[object]]:
    return lambda m: runtime.send_message(m, agent_id)


def _pykka_seq(ref: Any, seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(500):
            ref.ask(i)
        done += 500
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def _pykka_concurrent(refs: list[Any], seconds: float) -> float:
    """1,000 outstanding asks (one per actor), issued and collected in rounds.

    pykka's concurrency unit is a thread; 1,000 caller threads would mostly
    measure GIL contention, so the callers are modelled as 1,000 in-flight
    ``ask(block=False)`` futures per round from one thread.
    """
    import pykka

    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        futures = [ref.ask(done, block=False) for ref in refs]
        pykka.get_all(futures)
        done += len(refs)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def pykka_call_rates(s: Sizes) -> tuple[float, float]:
    registry: dict[str, Any] = {}
    pykka_spawn(registry, s.concurrency)
    refs = list(registry.values())
    _pykka_seq(refs[0], s.seconds / 4)  # warm-up
    seq = max(_pykka_seq(refs[0], s.seconds) for _ in range(s.repeats))
    _pykka_concurrent(refs, s.seconds / 4)  # warm-up
    conc = max(_pykka_concurrent(refs, s.seconds) for _ in range(s.repeats))
    pykka_stop_all()
    return seq, conc


# --------------------------------------------------------------------------------------
# Public API: floors and peer figures.
# --------------------------------------------------------------------------------------


def floor_figures(quick: bool) -> dict[str, float]:
    """Raw asyncio floors, measured now.

    Keys: ``spawn`` (actors/s), ``memory`` (bytes/actor, Task+Queue) and
    ``memory_lean`` (bytes/actor, no Task) at N=n_actors; ``spawn_small`` and
    ``memory_small`` at pykka's N; ``call_seq`` and ``call_conc`` (round trips/s,
    1 caller, and ``concurrency`` callers to as many actors).
    """
    s = sizes(quick)
    raw = spawn_case("raw", s.n_actors, s.repeats)
    raw_small = spawn_case("raw", s.n_threads, s.repeats)
    lean = spawn_case("lean", s.n_actors, s.repeats)
    seq, conc = asyncio.run(raw_call_rates(s))
    return {
        "spawn": raw["spawn_per_s"],
        "memory": raw["bytes_per_actor"],
        "memory_lean": lean["bytes_per_actor"],
        "spawn_small": raw_small["spawn_per_s"],
        "memory_small": raw_small["bytes_per_actor"],
        "call_seq": seq,
        "call_conc": conc,
    }


def floor_rows(floors: dict[str, float], quick: bool) -> list[Figure]:
    """The floors themselves as table rows (no floor of their own; N in the label)."""
    s = sizes(quick)
    big, small, c = f"N={s.n_actors:,}", f"N={s.n_threads:,}", s.concurrency
    return [
        Figure("floor.spawn", floors["spawn"], "actors/s", None, big, target=FLOOR_TARGET),
        Figure(
            "floor.spawn_threads_n",
            floors["spawn_small"],
            "actors/s",
            None,
            small,
            target=FLOOR_TARGET,
        ),
        _mem("floor.memory", floors["memory"], None, big, FLOOR_TARGET),
        _mem("floor.memory_threads_n", floors["memory_small"], None, small, FLOOR_TARGET),
        _mem("floor.memory_lean", floors["memory_lean"], None, big, FLOOR_TARGET),
        Figure(
            "floor.call_seq", floors["call_seq"], "calls/s", None, "1 caller", target=FLOOR_TARGET
        ),
        Figure(
            f"floor.call_{c}x{c}",
            floors["call_conc"],
            "calls/s",
            None,
            f"{c} callers",
            target=FLOOR_TARGET,
        ),
    ]


def _mem(name: str, value: float, floor: float | None, label: str, target: str) -> Figure:
    return Figure(name, value, "bytes/actor", floor, label, higher_is_better=False, target=target)


def _library_rows(
    lib: str,
    spawn: dict[str, float],
    calls: tuple[float, float],
    floors: dict[str, float],
    *,
    small: bool,
    n: int,
    concurrency: int,
) -> list[Figure]:
    """spawn / memory / call seq / call conc rows for one library beside its floors."""
    suffix = "_small" if small else ""
    task_label = f"asyncio Task+Queue, N={n:,}"
    c = concurrency
    return [
        Figure(
            f"{lib}.spawn",
            spawn["spawn_per_s"],
            "actors/s",
            floors["spawn" + suffix],
            task_label,
            target=TARGET,
        ),
        _mem(
            f"{lib}.memory",
            spawn["bytes_per_actor"],
            floors["memory" + suffix],
            task_label,
            TARGET,
        ),
        Figure(
            f"{lib}.call_seq",
            calls[0],
            "calls/s",
            floors["call_seq"],
            "asyncio queue+future",
            target=TARGET,
        ),
        Figure(
            f"{lib}.call_{c}x{c}",
            calls[1],
            "calls/s",
            floors["call_conc"],
            "asyncio queue+future",
            target=TARGET,
        ),
    ]


def peer_figures(quick: bool, floors: dict[str, float] | None = None) -> list[Figure]:
    """autogen-core and pykka figures, each beside its raw floor.

    ``floors`` defaults to a fresh :func:`floor_figures` measurement.
    """
    s = sizes(quick)
    floors = floors if floors is not None else floor_figures(quick)
    autogen = _library_rows(
        "autogen",
        spawn_case("autogen", s.n_actors, s.repeats),
        asyncio.run(autogen_call_rates(s)),
        floors,
        small=False,
        n=s.n_actors,
        concurrency=s.concurrency,
    )
    lazy = spawn_case("autogen_lazy", s.n_actors, s.repeats)
    autogen.insert(
        1,
        Figure(
            "autogen.spawn_lazy",
            lazy["spawn_per_s"],
            "actors/s",
            floors["spawn"],
            f"asyncio Task+Queue, N={s.n_actors:,}",
            target=TARGET,
        ),
    )
    pykka = _library_rows(
        "pykka",
        spawn_case("pykka", s.n_threads, s.repeats),
        pykka_call_rates(s),
        floors,
        small=True,
        n=s.n_threads,
        concurrency=s.concurrency,
    )
    return autogen + pykka


# --------------------------------------------------------------------------------------
# Netsuke's own rows (benchmarks/kernel.py, written separately).
# --------------------------------------------------------------------------------------


def netsuke_figures(quick: bool, floors: dict[str, float]) -> list[Figure] | None:
    """Netsuke's rows from ``kernel.netsuke_peer_comparison``, or None if unavailable."""
    try:
        from kernel import netsuke_peer_comparison  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"note: Netsuke rows skipped (kernel.netsuke_peer_comparison unavailable: {exc})")
        return None
    params = inspect.signature(netsuke_peer_comparison).parameters
    offered: dict[str, object] = {"quick": quick, "floors": floors}
    kwargs = {k: v for k, v in offered.items() if k in params}
    figures: list[Figure] = netsuke_peer_comparison(**kwargs)
    return figures


def notes(quick: bool) -> list[str]:
    s = sizes(quick)
    return [
        f"asyncio-based actors (floors, autogen): spawn/memory at N={s.n_actors:,}; "
        f"pykka actors are OS threads, so pykka spawn/memory use N={s.n_threads:,} "
        "and are compared with the floor re-measured at that N.",
        "memory = settled RSS delta / N after gc.collect(), each case in a fresh interpreter; "
        f"every actor holds a fresh {STATE_BYTES}-byte bytes state.",
        "autogen.spawn = register_agent_instance(agent, AgentId) (eager create+name); "
        "autogen.spawn lazy = register_factory once + first send_message per AgentId "
        "(1,000 in flight).",
        f"call rates: >= {s.seconds}s per measurement after a warm-up, best of {s.repeats}; "
        f"concurrent = {s.concurrency:,} caller tasks, one per actor (pykka: "
        f"{s.concurrency:,} in-flight ask(block=False) futures per round from one thread).",
        "ratio = value/floor (rates) or floor/value (bytes): fraction of the raw floor reached.",
        "GC stays on; the machine has 2 cores and may be shared, so figures are noisy.",
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "peer comparison")
    if args.case:
        run_child_case(args.case, args.n)
        return
    loop = loop_name()
    start = time.perf_counter()
    floors = floor_figures(args.quick)
    figures = floor_rows(floors, args.quick) + peer_figures(args.quick, floors)
    netsuke = netsuke_figures(args.quick, floors)
    if netsuke:
        figures += netsuke
    info = meta(loop)
    info.update(
        quick=args.quick,
        threads_alive_at_end=threading.active_count(),
        gc_enabled=gc.isenabled(),
        wall_seconds=round(time.perf_counter() - start, 1),
        notes=notes(args.quick),
    )
    report(
        "Netsuke peers: autogen-core, pykka vs raw asyncio floors",
        figures,
        as_json=args.json,
        extra=info,
    )


if __name__ == "__main__":
    main()
