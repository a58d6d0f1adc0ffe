"""``serve --nodes`` with ``nodes_pin``: each node process, every thread of it, on a core of
its own (docs/cluster.md, "serve --nodes" CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.cli._serve_nodes import _child_specs
from netsuke.cli._tuning import CPU_ENV

from .test_serve_nodes import _env, _helper_agents, _kill, _lines_until, _node_pid, _spawn

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity"),
]


def _cores_of(pid: int) -> set[str]:
    """The ``Cpus_allowed_list`` of every thread of ``pid``."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        found.add(status.split("Cpus_allowed_list:")[1].split()[0])
    return found


def _specs(pin: bool, count: int) -> list[dict[str, str]]:
    settings = Settings(nodes=count, nodes_pin=pin)
    specs = _child_specs(settings, count, "b", [], "sqlite:///x.db", "nats://x", None, 3, 8000)
    return [spec.env for spec in specs]


@pytest.mark.timeout(30)
def test_each_node_is_named_a_core_round_robin_only_when_asked() -> None:
    cores = sorted(os.sched_getaffinity(0))
    count = len(cores) + 1
    assert [env[CPU_ENV] for env in _specs(True, count)] == [
        str(cores[i % len(cores)]) for i in range(count)
    ]
    assert all(CPU_ENV not in env for env in _specs(False, count))


@pytest.mark.timeout(60)
def test_pinning_covers_the_threads_before_and_after() -> None:
    core = max(os.sched_getaffinity(0))
    code = f"""
import os, threading
from netsuke.cli._tuning import pin_threads
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
assert pin_threads({core}) == {core}
seen = {{}}
after = threading.Thread(target=lambda: seen.update(mask=os.sched_getaffinity(0)))
after.start(); after.join()
masks = {{frozenset(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}}
stop.set(); before.join()
assert masks == {{frozenset({{{core}}})}}, masks
assert seen["mask"] == {{{core}}}, seen
assert pin_threads(10_000) is None  # not a core of this process: refused, nothing changed
assert os.sched_getaffinity(0) == {{{core}}}
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


async def test_serve_nodes_pins_each_node_to_its_core(tmp_path: Path) -> None:
    _helper_agents(tmp_path)
    base = f"p{uuid.uuid4().hex[:8]}"
    proc = _spawn(
        ["--nodes", "2", "--node", base, "--port", "0", "--agents-dir", "agents"],
        _env(NETSUKE_NODES_PIN="true"),
        tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _lines_until(proc, "serving http://", 180)
        cores = sorted(os.sched_getaffinity(0))
        for i in (1, 2):
            pid = _node_pid(proc.pid, f"{base}-{i}")
            assert _cores_of(pid) == {str(cores[(i - 1) % len(cores)])}
        assert _cores_of(proc.pid) == _cores_of(os.getpid())  # the supervisor is left alone
    finally:
        _kill(proc)
