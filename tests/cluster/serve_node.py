"""``netsuke serve --cluster`` node processes for the cluster tests (``test_serve_failover``,
``test_forwarding``, ``test_cluster_page``): start one, read its URL (and the admin key it
printed), stop it. Each node's stderr (its log) goes to ``<cwd>/node-<name>.log``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .procs import end

EXE = str(Path(sys.executable).parent / "netsuke")


def env(**extra: str) -> dict[str, str]:
    """This process's environment without ``NETSUKE_*`` settings, no rate limit, ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    return {**clean, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0", **extra}


def spawn(
    name: str,
    nats: str,
    environ: dict[str, str],
    cwd: Path,
    *,
    lease: float = 2,
    labels: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """``netsuke serve --cluster NATS --node NAME --port 0`` (``--label`` for each label)."""
    args = [EXE, "serve", "--cluster", nats, "--node", name, "--port", "0"]
    args += ["--cluster-lease", f"{lease:g}"]
    for label in labels:
        args += ["--label", label]
    with open(cwd / f"node-{name}.log", "ab") as log:
        return subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env=environ, cwd=cwd
        )


async def start(
    name: str,
    nats: str,
    environ: dict[str, str],
    cwd: Path,
    *,
    lease: float = 2,
    labels: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], str, str | None]:
    """A node process, its base URL and the admin key it printed (if it issued one)."""
    proc = spawn(name, nats, environ, cwd, lease=lease, labels=labels)
    assert proc.stdout is not None
    first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
    assert f"node '{name}#" in first, first
    url = first.split(" running at ")[1].split()[0]
    key = None
    if environ.get("NETSUKE_BOOTSTRAP_ADMIN") == "true":
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert "admin API key" in line, line
        key = line.rsplit(":", 1)[1].strip()
    return proc, url, key


async def start_nodes(
    names: Sequence[str],
    nats: str,
    common: dict[str, str],
    cwd: Path,
    procs: list[subprocess.Popen[str]],
    launcher: Callable[..., Awaitable[tuple[subprocess.Popen[str], str, str | None]]] = start,
) -> tuple[str, list[str]]:
    """Start the nodes ``names`` one after another on the settings ``common`` (the first one
    issues the admin key) by ``launcher`` (``start``, or a test's own with its lease and
    labels), each appended to ``procs`` as soon as it runs (the caller stops them): the admin
    key and the nodes' base URLs."""
    key: str | None = None
    urls = []
    for i, name in enumerate(names):
        boot = "true" if i == 0 else "false"
        proc, url, issued = await launcher(
            name, nats, env(**common, NETSUKE_BOOTSTRAP_ADMIN=boot), cwd
        )
        procs.append(proc)
        urls.append(url)
        key = key or issued
    assert key is not None
    return key, urls


async def wait_members(http: Any, url: str, count: int, timeout: float = 60) -> None:
    """Until the node at ``url`` lists ``count`` live members (``GET /cluster/nodes``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len((await http.get(f"{url}/api/v1/cluster/nodes")).json()["nodes"]) < count:
        assert loop.time() < deadline, f"fewer than {count} members after {timeout} s"
        await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill the node (continued first, if a test stopped it) and close its pipe."""
    end(proc)
