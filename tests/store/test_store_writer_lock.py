"""SQLite turn writers of several processes on one file (``serve --nodes``): the cross-process
writer lock (``WriterLock``, an ``flock`` on ``<database>-lock``) makes a writer wait for
another process's commit without SQLite's sleeping busy handler; it never loses or doubles a
commit, never hangs on a process that keeps it, and a lone turn never waits for it on the
event loop."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart

from netsuke.store import Store
from netsuke.store._observe import METRICS
from netsuke.store._turn_writers import SqliteTurnWriter, WriterLock

pytestmark = pytest.mark.timeout(120)


def _says(text: str) -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(text)])]


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# One writer process: waits for the start file, then commits TURNS turns on each of its
# sessions, several at a time (group commit on the writer thread), and prints "ok".
_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from pydantic_ai.messages import ModelRequest, UserPromptPart
    from netsuke.store import Store

    url, tag, go, turns = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

    async def main():
        async with Store.open(url) as store:
            sessions = [f"{tag}-{i}" for i in range(4)]
            while not go.exists():
                await asyncio.sleep(0.01)
            async def chat(sid):
                for n in range(turns):
                    msg = [ModelRequest(parts=[UserPromptPart(f"{sid}:{n}")])]
                    await store.conversations.append_turn_row(sid, msg, None)
            await asyncio.gather(*(chat(s) for s in sessions))
        print("ok")

    asyncio.run(main())
    """
)


async def test_two_processes_contending_lose_and_double_no_commit(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    turns = 60
    async with Store.open(_url(db)) as store:  # migrated once, sessions made, as serve does
        for tag in ("a", "b"):
            for i in range(4):
                await store.conversations.open(f"{tag}-{i}", agent_name="x")
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            _url(db),
            tag,
            str(go),
            str(turns),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    try:
        go.touch()
        for p in procs:
            out, err = await asyncio.wait_for(p.communicate(), 100)
            assert p.returncode == 0 and out.decode().strip() == "ok", err.decode()[-2000:]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert (tmp_path / "shared.db-lock").exists()
    async with Store.open(_url(db)) as store:
        for tag in ("a", "b"):
            for i in range(4):
                sid = f"{tag}-{i}"
                history = await store.conversations.history(sid)
                texts = [m.parts[0].content for m in history]  # type: ignore[union-attr]
                assert texts == [f"{sid}:{n}" for n in range(turns)], sid  # in order, once each


def test_the_lock_excludes_another_holder_and_gives_up_after_its_timeout(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "x.db")
    mine, theirs = WriterLock(path, timeout=5.0), WriterLock(path, timeout=0.05)
    try:
        assert mine.acquire()
        assert not theirs.acquire(wait=False)
        waits = METRICS.lock_waits
        assert not theirs.acquire()  # past its timeout: goes on without it (SQLite decides)
        assert METRICS.lock_waits == waits + 1
        assert not theirs.acquire()  # and its next commits do not wait for it again
        assert METRICS.lock_waits == waits + 1
        mine.release()
        assert theirs.acquire()  # free: taken at once, skipping or not
        theirs.release()
        assert WriterLock(path, timeout=60.0).timeout == WriterLock.MAX_WAIT
    finally:
        mine.close()
        theirs.close()


def test_an_unusable_lock_file_means_no_lock(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "missing" / "x.db"), timeout=1.0)
    assert lock.acquire() and lock.acquire(wait=False)  # nothing to hold: SQLite decides
    lock.release()
    lock.close()


async def test_a_commit_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    async with Store.open(_url(db)) as store:
        await store.conversations.open("s", agent_name="x")
        writer = store.conversations._writer
        assert isinstance(writer, SqliteTurnWriter)
        other = WriterLock(str(db), timeout=1.0)  # another process's writer, as far as flock goes
        assert other.acquire()
        try:
            busy = METRICS.inline_busy
            # a lone turn does not wait on the event loop: it goes to the thread, which waits
            pending = asyncio.create_task(
                store.conversations.append_turn_row("s", _says("one"), None, lone=True)
            )
            while writer._pending == 0 and not pending.done():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            assert METRICS.inline_busy == busy + 1
            await asyncio.sleep(0.05)
            assert not pending.done()  # waiting for the other holder
        finally:
            other.release()
            other.close()
        receipt = await pending
        assert (receipt.first_seq, receipt.last_seq) == (0, 0)
        history = await store.conversations.history("s")
        assert [m.parts[0].content for m in history] == ["one"]  # type: ignore[union-attr]
