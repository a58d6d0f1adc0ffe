"""Shared harness for Netsuke's benchmark scripts.

Every script in ``benchmarks/`` reports a list of :class:`Figure` through
:func:`report`, which prints an aligned table and, with ``--json``, one JSON
object as the very last line of output::

    {"figures": {name: {"value", "unit", "floor", "ratio", "target", "met"}}, "meta": {...}}

The garbage collector stays ON in measured paths; ``gc.freeze()`` after bulk
creation is fine, ``gc.disable()`` is not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Size of the per-actor state every memory benchmark gives each actor.
STATE_BYTES = 100

#: The offline agent ``bench`` of the API benchmarks (``bench_agents``).
BENCH_AGENT = "name: bench\nmodel: offline\nsystem_prompt: You are a helpful assistant.\n"

#: Environment switch: set to "asyncio" to benchmark the stock event loop.
LOOP_ENV = "NETSUKE_BENCH_LOOP"


@dataclass
class Figure:
    """One measured figure, optionally compared with a raw floor."""

    name: str
    value: float
    unit: str
    floor: float | None = None
    floor_label: str = ""
    higher_is_better: bool = True
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """Fraction of the floor reached: value/floor, or floor/value when lower is better."""
        if self.floor is None or self.floor == 0 or self.value == 0:
            return None
        if self.higher_is_better:
            return self.value / self.floor
        return self.floor / self.value

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "floor": self.floor,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
        }


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the flags every benchmark script shares (``--quick``, ``--json``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes; finish in under a minute"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    # Hidden: run a single memory/spawn case in this (fresh) process.
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def loop_name() -> str:
    """Install uvloop's policy when importable (unless NETSUKE_BENCH_LOOP=asyncio)."""
    if os.environ.get(LOOP_ENV, "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def settled_rss() -> int:
    """RSS after a full garbage collection."""
    gc.collect()
    return rss_bytes()


def elapsed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds taken by ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(script: str, case: str, n: int, *, timeout: float = 300.0) -> dict[str, float]:
    """Run ``script --case CASE --n N`` in a fresh interpreter and return its JSON result.

    The child prints one JSON object (a flat name -> number map) as its last
    line. A fresh process per case keeps RSS deltas from polluting each other.
    """
    proc = subprocess.run(
        [sys.executable, script, "--case", case, "--n", str(n)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"case {case!r} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"case {case!r} printed nothing:\n{proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def bench_agents(tmp: str | os.PathLike[str]) -> Path:
    """``<tmp>/agents``, made, holding the offline agent ``bench`` (``BENCH_AGENT``)."""
    agents = Path(tmp) / "agents"
    agents.mkdir()
    (agents / "bench.yaml").write_text(BENCH_AGENT)
    return agents


def meta(loop: str) -> dict[str, Any]:
    """Machine facts worth recording beside every figure."""
    return {
        "loop": loop,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def _fmt_met(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def format_table(figures: Sequence[Figure]) -> str:
    """Aligned human table of figures."""
    header = ("figure", "value", "unit", "floor", "floor label", "ratio", "target", "met")
    rows = [header]
    for fig in figures:
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.3f}"
        rows.append(
            (
                fig.name,
                _fmt(fig.value),
                fig.unit,
                _fmt(fig.floor),
                fig.floor_label or "-",
                ratio,
                fig.target or "-",
                _fmt_met(fig.met),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {1, 3, 5}
    lines = []
    for idx, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if idx == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(
    title: str,
    figures: Sequence[Figure],
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the human table, then (if ``as_json``) the JSON object as the last line."""
    print(f"== {title} ==")
    print(format_table(figures))
    for key, value in (extra or {}).items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(f"  - {item}")
        else:
            print(f"{key}: {value}")
    if as_json:
        payload: dict[str, Any] = {"figures": {fig.name: fig.as_json() for fig in figures}}
        if extra:
            payload["meta"] = extra
        sys.stdout.flush()
        print(json.dumps(payload))


def run_and_report(
    title: str,
    run: Callable[[bool], Any],
    args: argparse.Namespace,
    *,
    log_level: str | None = None,
) -> None:
    """The usual ``main`` of a benchmark script: ``asyncio.run(run(args.quick))`` (with
    Netsuke's logging at ``log_level`` when given), then :func:`report` under
    ``"<title> (<loop>)"`` with the machine facts, ``quick``, the wall seconds and the load
    average at the end."""
    loop = loop_name()
    if log_level is not None:
        from netsuke.observability import configure_logging

        configure_logging(level=log_level)
    t0 = time.perf_counter()
    figures = asyncio.run(run(args.quick))
    extra = {
        **meta(loop),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "load": os.getloadavg()[0],
    }
    report(f"{title} ({loop})", figures, as_json=args.json, extra=extra)
