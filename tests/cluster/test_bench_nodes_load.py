"""The load of ``benchmarks/cluster_nodes.py`` (``--turns-per-session``): each client starts a
new session after that many turns, on the same connection, so both servers of the benchmark
run conversations of the same lengths (a turn's work grows with its conversation's)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from netsuke.api import Settings

from ..api.conftest import serve

pytestmark = pytest.mark.timeout(120)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster_nodes.py"


async def _load(url: str, key: str, per_session: int) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH), "--load", url, "--key", key, "--clients", "2",
        "--seconds", "0.5", "--turns-per-session", str(per_session),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _bench_settings(tmp_path: Path) -> Settings:
    """A one-node server's settings with the benchmark's offline agent ``bench``."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "bench.yaml").write_text("name: bench\nmodel: offline\nsystem_prompt: Hi.\n")
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        port=0,
        rate_limit_per_minute=0,
        agents_dir=agents,
    )


@pytest.mark.parametrize("per_session", [0, 2])
async def test_the_load_bounds_the_turns_of_each_session(tmp_path: Path, per_session: int) -> None:
    settings = _bench_settings(tmp_path)
    async with serve(settings) as live:
        out = await _load(live.url, live.admin_key, per_session)
        assert out["errors"] == {}
        sessions = out["sessions"]
        assert isinstance(sessions, list) and len(set(sessions)) == len(sessions)
        total = out["total"]
        assert isinstance(total, int) and total >= 2  # each client's first turn always runs
        async with live.client(live.admin_key) as http:
            turns = []
            for sid in sessions:
                kinds: list[str] = []
                cursor: str | None = "0"
                while cursor is not None:
                    r = await http.get(
                        f"/api/v1/sessions/{sid}/messages", params={"limit": 1000, "cursor": cursor}
                    )
                    assert r.status_code == 200, r.text
                    kinds += [m["kind"] for m in r.json()["items"]]
                    cursor = r.json()["next_cursor"]
                turns.append(kinds.count("response"))  # one reply per turn (offline model)
        assert sum(turns) == total
        if per_session:
            assert max(turns) <= per_session
            assert len(sessions) >= 2 and len(sessions) * per_session >= total
        else:
            assert len(sessions) == 2


async def test_load_processes_started_together_wait_for_each_other(tmp_path: Path) -> None:
    """``run_loads`` (``--pair``): several load processes make their sessions, then start
    their turns together once ``ready()`` ran; each one's figures come back."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import cluster_nodes
    finally:
        sys.path.remove(str(BENCH.parent))
    settings = _bench_settings(tmp_path)
    calls: list[int] = []

    async with serve(settings) as live:
        target = (live.url, live.admin_key)
        outs = await asyncio.to_thread(
            cluster_nodes.run_loads, [target, target], 1, 0.5, 2, lambda: calls.append(1)
        )
    assert calls == [1]
    assert len(outs) == 2
    for out in outs:
        assert out["errors"] == {}
        total = out["total"]
        assert isinstance(total, int) and total >= 1
    first, second = (o["sessions"] for o in outs)
    assert isinstance(first, list) and isinstance(second, list) and first and second
    assert not set(first) & set(second)  # each load process made its own sessions
