"""Kernel benchmarks: memory per idle process, spawn rate, call round trips, registry lookups.

Every figure stands beside its floor, measured in the same run:

* memory: a raw asyncio actor (a Task blocked on an asyncio.Queue) holding the same 100-byte
  state, registered in a dict; the figure is RSS growth per process, in a fresh interpreter;
* spawn: creating those raw actors and naming them in a dict;
* calls: a round trip through an asyncio.Queue and a Future to a raw actor Task;
* registry lookups: ``dict.get``.

Netsuke's measured path keeps its semantics on: processes are supervised by a
DynamicSupervisor (linked), registered by name, calls carry a timeout and fail fast when the
callee dies. The garbage collector stays on (``gc.freeze()`` after bulk spawns only).

    python benchmarks/kernel.py [--quick] [--json]
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path, so benchmarks/queue.py never
# shadows the standard library's queue (used by asyncio, aiosqlite and the store's writer).
sys.path.append(sys.path.pop(0))

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

from _harness import STATE_BYTES, Figure, loop_name, parse_args, report, run_case, settled_rss
from netsuke import (
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    From,
    Process,
    Runtime,
)

HERE = str(Path(__file__).resolve())


class Session(Process):
    """A process with a 100-byte state, as an idle user session would hold."""

    __slots__ = ("state",)

    def init(self, arg: bytes) -> None:
        self.state = arg

    def handle_call(self, request: Any, from_: From) -> Any:
        return request

    def handle_cast(self, request: Any) -> None:
        return None


SPEC = ChildSpec(Session, id="session")


def state_for(i: int) -> bytes:
    return i.to_bytes(4, "little") * (STATE_BYTES // 4)


# ------------------------------------------------------------------ raw floors


async def _raw_actor(q: asyncio.Queue[Any], state: bytes) -> None:
    while True:
        msg, fut = await q.get()
        if msg is None:
            return
        fut.set_result(msg)


class RawActor:
    __slots__ = ("queue", "task")

    def __init__(self, state: bytes) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(_raw_actor(self.queue, state))


async def raw_call(actor: RawActor, msg: object) -> object:
    fut = asyncio.get_running_loop().create_future()
    actor.queue.put_nowait((msg, fut))
    return await fut


async def raw_stop(actors: dict[str, RawActor]) -> None:
    for a in actors.values():
        a.task.cancel()
    await asyncio.gather(*(a.task for a in actors.values()), return_exceptions=True)


# ------------------------------------------------------------ memory (subprocess)


async def _case_netsuke(n: int) -> dict[str, float]:
    async with Runtime(hibernate_sweep=3600) as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(), name="sessions")
        assert sup is not None
        base = settled_rss()
        t0 = time.perf_counter()
        for i in range(n):
            await DynamicSupervisor.start_child(
                "sessions", SPEC, arg=state_for(i), name=f"session-{i}", runtime=rt
            )
        spawn_s = time.perf_counter() - t0
        gc.freeze()
        # wake every process once (a message each), then let them hibernate again
        batch = 1_000
        for lo in range(0, n, batch):
            for i in range(lo, min(n, lo + batch)):
                rt.cast(f"session-{i}", "wake")
            await asyncio.sleep(0)
            await rt.hibernate_idle()
        assert rt.active_count() == 0
        rss = settled_rss() - base
        result = {"bytes_per_process": rss / n, "spawn_per_s": n / spawn_s}
        gc.unfreeze()
    return result


async def _case_raw(n: int) -> dict[str, float]:
    base = settled_rss()
    actors: dict[str, RawActor] = {}
    t0 = time.perf_counter()
    for i in range(n):
        actors[f"session-{i}"] = RawActor(state_for(i))
    await asyncio.sleep(0)  # let every task start and block on its queue
    spawn_s = time.perf_counter() - t0
    rss = settled_rss() - base
    await raw_stop(actors)
    return {"bytes_per_process": rss / n, "spawn_per_s": n / spawn_s}


def run_child(case: str, n: int) -> None:
    loop_name()
    fn = {"netsuke": _case_netsuke, "raw": _case_raw}[case]
    print(json.dumps(asyncio.run(fn(n))))


# ------------------------------------------------------------------ call rates


async def _seq_rate(call: Any, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await call(i)
    return n / (time.perf_counter() - t0)


async def _fan_rate(calls: list[Any], per_caller: int) -> float:
    async def caller(c: Any) -> None:
        for i in range(per_caller):
            await c(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in calls))
    return len(calls) * per_caller / (time.perf_counter() - t0)


async def call_rates(n_seq: int, fan: int, per_caller: int) -> dict[str, float]:
    out: dict[str, float] = {}
    # raw floor
    actors = {f"a{i}": RawActor(state_for(i)) for i in range(fan)}
    first = actors["a0"]
    out["raw_seq"] = max([await _seq_rate(lambda i: raw_call(first, i), n_seq) for _ in range(3)])
    raw_fns = [lambda i, a=a: raw_call(a, i) for a in actors.values()]
    out["raw_fan"] = max([await _fan_rate(raw_fns, per_caller) for _ in range(3)])
    await raw_stop(actors)
    # netsuke: by registered name, default 5 s timeout, supervised and linked
    async with Runtime() as rt:
        await rt.start(DynamicSupervisor, None, name="sup")
        for i in range(fan):
            await DynamicSupervisor.start_child("sup", SPEC, arg=state_for(i), name=f"a{i}")
        call = rt.call
        out["netsuke_seq"] = max(
            [await _seq_rate(lambda i: call("a0", i), n_seq) for _ in range(3)]
        )
        fns = [lambda i, name=f"a{k}": call(name, i) for k in range(fan)]
        out["netsuke_fan"] = max([await _fan_rate(fns, per_caller) for _ in range(3)])
        # registry lookups
        names = [f"a{i}" for i in range(fan)]
        raw = {name: object() for name in names}
        reps = max(1, n_seq // fan) * 10
        t0 = time.perf_counter()
        get = raw.get
        for _ in range(reps):
            for name in names:
                get(name)
        out["raw_lookup"] = reps * fan / (time.perf_counter() - t0)
        whereis = rt.whereis
        t0 = time.perf_counter()
        for _ in range(reps):
            for name in names:
                whereis(name)
        out["netsuke_lookup"] = reps * fan / (time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------- figures


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"mem": [20_000], "spawn": 50_000, "seq": 20_000, "fan": 1000, "per": 20}
    return {"mem": [100_000, 1_000_000], "spawn": 200_000, "seq": 200_000, "fan": 1000, "per": 200}


def kernel_figures(quick: bool, loop: str, *, mem_sizes: list[int] | None = None) -> list[Figure]:
    s = _sizes(quick)
    if mem_sizes is not None:
        s["mem"] = mem_sizes
    figs: list[Figure] = []
    for n in s["mem"]:
        ns = run_case(HERE, "netsuke", n, timeout=900)
        raw = run_case(HERE, "raw", n, timeout=900)
        v, f = ns["bytes_per_process"], raw["bytes_per_process"]
        figs.append(
            Figure(
                f"memory per idle process ({n:,})",
                v,
                "B",
                f,
                "raw asyncio actor (Task+Queue)",
                higher_is_better=False,
                target="<= 640 B",
                met=v <= 640,
            )
        )
    ns = run_case(HERE, "netsuke", s["spawn"], timeout=900)
    raw = run_case(HERE, "raw", s["spawn"], timeout=900)
    v, f = ns["spawn_per_s"], raw["spawn_per_s"]
    figs.append(
        Figure(
            f"spawn + register + supervise ({s['spawn']:,})",
            v,
            "/s",
            f,
            "raw asyncio actor in a dict",
            target=">= 200k/s and >= 60% of floor",
            met=v >= 200_000 and v >= 0.6 * f,
        )
    )
    rates = asyncio.run(call_rates(s["seq"], s["fan"], s["per"]))
    v, f = rates["netsuke_seq"], rates["raw_seq"]
    figs.append(
        Figure(
            "call by name, sequential",
            v,
            "/s",
            f,
            "raw Queue+Future round trip",
            target=">= 70% of floor",
            met=v >= 0.7 * f,
        )
    )
    v, f = rates["netsuke_fan"], rates["raw_fan"]
    need_abs = loop == "uvloop"
    figs.append(
        Figure(
            "call by name, 1000 callers -> 1000 processes",
            v,
            "/s",
            f,
            "raw Queue+Future round trip",
            target=">= 70% of floor" + (" and >= 250k/s (uvloop)" if need_abs else ""),
            met=v >= 0.7 * f and (v >= 250_000 or not need_abs),
        )
    )
    v, f = rates["netsuke_lookup"], rates["raw_lookup"]
    figs.append(
        Figure("registry lookups (whereis)", v, "/s", f, "dict.get", target="(report)", met=None)
    )
    return figs


def netsuke_peer_comparison(quick: bool) -> list[Figure]:
    """Netsuke's spawn, memory and call figures measured as peers.py measures its peers."""
    loop = loop_name()
    figs = kernel_figures(quick, loop, mem_sizes=[20_000 if quick else 100_000])
    return [
        Figure(
            "netsuke " + f.name,
            f.value,
            f.unit,
            f.floor,
            f.floor_label,
            f.higher_is_better,
            f.target,
            f.met,
        )
        for f in figs
        if not f.name.startswith("registry")
    ]


def main() -> None:
    args = parse_args(__doc__ or "kernel benchmarks")
    if args.case:
        run_child(args.case, args.n)
        return
    loop = loop_name()
    figs = kernel_figures(args.quick, loop)
    report(f"Netsuke kernel ({loop})", figs, as_json=args.json, extra={"loop": loop})


if __name__ == "__main__":
    main()
