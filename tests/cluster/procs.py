"""Node OS processes for the cluster test harnesses (``faults.py``, ``failover_harness.py``):
start one with its stderr (its log) appended to a file, kill, reap, and show the tail of every
node's log when a test fails, so a failure on a busy CI machine says what the nodes did.

Each harness node (anything with ``name``, ``proc``, ``stopped`` and ``log``) writes to one
file across its incarnations; every start and SIGKILL appends a header line with the time.
The files live in a directory of the harness's own (:func:`log_dir`), removed when the
cluster ends without an error and kept (its path printed) when it ends with one, or always
with ``NETSUKE_TEST_KEEP_NODE_LOGS=1``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]
TAIL_LINES = 60


class NodeProc(Protocol):
    name: str
    proc: subprocess.Popen[bytes] | None
    stopped: bool
    log: Path | None


def popen(n: NodeProc, module: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Start ``python -m <module> <args>`` for ``n`` (stdout piped for its ready line, stderr
    appended to ``n.log``; to nowhere when ``n.log`` is ``None``)."""
    err: int | object = subprocess.DEVNULL
    f = None
    if n.log is not None:
        f = open(n.log, "ab")  # noqa: SIM115 (the child holds the descriptor; closed below)
        f.write(f"---- {time.strftime('%H:%M:%S')} start {n.name} {' '.join(args)}\n".encode())
        f.flush()
        err = f
    try:
        n.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,  # type: ignore[arg-type]
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        )
    finally:
        if f is not None:
            f.close()
    n.stopped = False


def kill(n: NodeProc) -> None:
    """SIGKILL ``n``'s process and wait for it (its pipe is closed by the next start)."""
    assert n.proc is not None
    os.kill(n.proc.pid, signal.SIGKILL)
    n.proc.wait(30)
    _note(n, f"SIGKILL (exit {n.proc.returncode})")


def end(p: subprocess.Popen[Any]) -> None:
    """Kill a node process if it still runs (continued first, in case a test stopped it),
    reap it and close its stdout."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
        p.wait(30)
    if p.stdout is not None:
        p.stdout.close()


def reap(nodes: Iterable[NodeProc]) -> None:
    """Kill what still runs (continued first if stopped) and close the pipes."""
    for n in nodes:
        if n.proc is not None:
            end(n.proc)


def _note(n: NodeProc, what: str) -> None:
    if n.log is not None:
        with contextlib.suppress(OSError), open(n.log, "a") as f:
            f.write(f"---- {time.strftime('%H:%M:%S')} {what}\n")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


def print_tails(nodes: Iterable[NodeProc], lines: int = TAIL_LINES) -> None:
    for n in nodes:
        if n.log is not None:
            print(f"\n==== last {lines} lines of {n.name}'s log ({n.log}) ====")
            print(tail(n.log, lines))
    sys.stdout.flush()


@contextlib.contextmanager
def log_dir(nodes: list[NodeProc]) -> Iterator[Path]:
    """A directory for the nodes' logs; on an error inside, print each node's tail and keep
    the directory, else remove it."""
    d = Path(tempfile.mkdtemp(prefix="netsuke-nodes-"))
    try:
        yield d
    except BaseException:
        print_tails(nodes)
        print(f"(node logs kept in {d})")
        raise
    if os.environ.get("NETSUKE_TEST_KEEP_NODE_LOGS") == "1":
        print(f"(node logs kept in {d})")
    else:
        shutil.rmtree(d, ignore_errors=True)
