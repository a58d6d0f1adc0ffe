"""Issue 14 item 11 (and the read-only half of item 8): a store that cannot be used stops
``netsuke serve`` with one line ``netsuke: error: ...`` and a non-zero exit, never a
traceback: a corrupt file, a locked database, an unreadable path, a read-only data dir."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsuke.store import Store

EXE = str(Path(sys.executable).parent / "netsuke")


def _serve(db: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{db}", "--run-for", "5"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=db.parent,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *reasons: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("netsuke: error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr) < 2000, result.stderr[-2000:]
    assert any(reason in errors[0] for reason in reasons), errors[0]


def _seed(db: Path) -> None:
    async def make() -> None:
        async with Store.open(f"sqlite+aiosqlite:///{db}") as store:
            for i in range(300):
                await store.audit.record(
                    actor="seed", action="seed", target=f"t{i}", outcome="ok", details={"i": i}
                )

    asyncio.run(make())


@pytest.mark.timeout(90)
def test_corrupt_store_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "text.db"
    text.write_text("not a database, just text\n" * 100)
    _assert_one_line(_serve(text), "file is not a database")
    for command in (["current"], ["upgrade"]):
        db_command = subprocess.run(
            [EXE, "db", *command, "--url", f"sqlite:///{text}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        _assert_one_line(db_command, "file is not a database")

    pages = tmp_path / "pages.db"
    _seed(pages)
    data = bytearray(pages.read_bytes())
    rng = random.Random(7)
    for page in range(1, len(data) // 4096):
        start = page * 4096
        data[start : start + 4096] = rng.randbytes(4096)
    pages.write_bytes(bytes(data))
    _assert_one_line(_serve(pages), "malformed", "not a database")


@pytest.mark.timeout(90)
def test_unreadable_and_locked_stores_are_one_line(tmp_path: Path) -> None:
    unreadable = tmp_path / "dir.db"
    unreadable.mkdir()  # a path that cannot be opened as a database file
    _assert_one_line(_serve(unreadable), "unable to open database file")

    locked = tmp_path / "locked.db"
    _seed(locked)
    holder = sqlite3.connect(locked, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO audit_log (at, actor, action, target, outcome, details) "
                       "VALUES ('2026-01-01', 'x', 'x', 'x', 'ok', '{}')")  # fmt: skip
        _assert_one_line(_serve(locked), "database is locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.timeout(90)
def test_read_only_data_dir_refuses_to_start(tmpfs: Path) -> None:
    db = tmpfs / "netsuke.db"
    _seed(db)
    # leave the write-ahead log and its index behind, as a node killed mid-run does: SQLite
    # then opens the database read-only without complaint and only writes fail
    subprocess.run(
        [sys.executable, "-c",
         "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute(\"INSERT INTO audit_log (at, actor, action, target, outcome, details) "
         "VALUES ('2026-01-01', 'x', 'x', 'x', 'ok', '{}')\"); c.commit(); os._exit(0)",
         str(db)],
        check=True,
    )  # fmt: skip
    assert (tmpfs / "netsuke.db-wal").exists()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert not os.access(tmpfs, os.W_OK)
    _assert_one_line(_serve(db), "read-only", "readonly")
